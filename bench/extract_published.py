"""Copy published llama.cpp figures out of a source repository into bench/data/published/.

The truth set is copied, never typed: this script reads the notebooks of
XiongjieDai/GPU-Benchmarks-on-LLM-Inference (commit COMMIT below) and writes every llama-bench row
they print to speed/xiongjiedai.csv and every load log's buffer lines to memory/xiongjiedai.toml,
each with the URL of the notebook it came from. Rerun it to check the files:

    python bench/extract_published.py /path/to/a/clone/of/GPU-Benchmarks-on-LLM-Inference

A clone's git directory is enough (it reads HEAD with `git show`); the files it writes are
compared byte for byte by `--check`.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

REPO = "XiongjieDai/GPU-Benchmarks-on-LLM-Inference"
COMMIT = "aa72e0ec86c356c41f8281c9733e9a13c3675800"
OUT = Path(__file__).parent / "data" / "published"
COLUMNS = ("source,date,build,gpu,gpu_count,backend,model,model_id,quant,size_GiB,params_B,ngl,n_batch,n_ubatch,"
           "flash_attn,split_mode,test,tokens_per_s,stddev,notes").split(",")
MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
# the model files the notebooks load, as their own clone cell names them (JaaackXD/Llama-3-*-GGUF)
MODEL_IDS = {"8B-v3": "Meta-Llama-3-8B", "70B-v3": "Meta-Llama-3-70B"}
QUANTS = {"ggml-model-Q4_K_M.gguf": "Q4_K_M", "ggml-model-f16.gguf": "F16"}
BUFFER_LINE = re.compile(r"(buffer size|KV self size)")
SETTING = re.compile(r"llama_new_context_with_model: (n_ctx|n_batch|n_ubatch|flash_attn)\s+=\s+(\d+)")


def notebook(git_dir: str, path: str) -> list[dict]:
    text = subprocess.run(["git", "--git-dir", git_dir, "show", f"{COMMIT}:{path}"], capture_output=True, text=True,
                          check=True).stdout
    return json.loads(text)["cells"]


def cell_text(cell: dict) -> tuple[str, str]:
    source = "".join(cell["source"])
    outputs = "".join("".join(o.get("text", [])) for o in cell.get("outputs", []))
    return source, outputs


def run_date(cells: list[dict]) -> str:
    """nvidia-smi's first line (`Thu May  9 18:43:56 2024`), where the notebook ran it."""
    for cell in cells:
        m = re.search(r"^\w{3} (\w{3}) +(\d+) [\d:]+ (\d{4})\s*$", cell_text(cell)[1], re.M)
        if m:
            return f"{m[3]}-{MONTHS[m[1]]:02d}-{int(m[2]):02d}"
    return ""


def devices(outputs: str) -> list[str]:
    cuda = re.findall(r"Device \d+: (.+?), compute capability", outputs)
    metal = re.findall(r"ggml_metal_init: found device: (.+)", outputs)
    return cuda or [m.strip() for m in metal]


def model_of(source: str) -> tuple[str, str]:
    m = re.search(r"-m \./models/([\w-]+)/([\w.-]+\.gguf)", source)
    if not m:
        raise ValueError(f"no model path in {source[:120]!r}")
    return MODEL_IDS[m[1]], QUANTS[m[2]]


def url(path: str) -> str:
    return f"https://github.com/{REPO}/blob/{COMMIT}/{quote(path)}"


def runs(cells: list[dict], command: str, marker: str) -> Iterator[tuple[int, str, str, str, str]]:
    """(cell index, source, outputs, model id, quant) of each cell that ran `command` and printed `marker`."""
    for index, cell in enumerate(cells):
        source, outputs = cell_text(cell)
        if command in source and marker in outputs:
            yield (index, source, outputs, *model_of(source))


def bench_rows(path: str, cells: list[dict], gpu_names: list[str]) -> list[dict[str, str]]:
    rows = []
    date = run_date(cells)
    for index, _, outputs, model_id, quant in runs(cells, "llama-bench", "| model"):
        found = devices(outputs) or gpu_names
        build = re.search(r"build: (\w+ \(\d+\))", outputs)
        lines = [line for line in outputs.splitlines() if line.startswith("|")]
        header = [h.strip() for h in lines[0].strip("|").split("|")]
        for line in lines[2:]:
            cells_ = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
            rate, _, spread = cells_["t/s"].partition("±")
            rows.append({
                "source": url(path), "date": date, "build": build[1] if build else "",
                "gpu": found[0] if found else "", "gpu_count": str(len(found) or 1), "backend": cells_["backend"],
                "model": cells_["model"], "model_id": model_id, "quant": quant,
                "size_GiB": cells_["size"].removesuffix(" GiB"), "params_B": cells_["params"].removesuffix(" B"),
                "ngl": cells_["ngl"], "n_batch": cells_.get("n_batch", ""), "n_ubatch": cells_.get("n_ubatch", ""),
                "flash_attn": cells_.get("fa", ""), "split_mode": cells_.get("sm", ""),
                "test": cells_["test"].replace(" ", ""), "tokens_per_s": rate.strip(), "stddev": spread.strip(),
                "notes": f"cell {index}; threads {cells_['threads']}" if "threads" in cells_ else f"cell {index}",
            })
    return rows


def load_logs(path: str, cells: list[dict]) -> list[dict]:
    logs = []
    date = run_date(cells)
    for index, source, outputs, model_id, quant in runs(cells, "./main", "buffer size"):
        settings = {k: int(v) for k, v in SETTING.findall(outputs)}
        offloaded = re.search(r"offloaded (\d+)/(\d+) layers", outputs)
        ngl = re.search(r"-ngl (\d+)", source)
        log: dict = {"source": url(path), "cell": index, "date": date, "model_id": model_id, "quant": quant,
                     **settings, "type_k": "f16", "type_v": "f16"}
        kv = re.search(r"K \((\w+)\).*V \((\w+)\)", outputs)
        if kv:
            log["type_k"], log["type_v"] = kv[1], kv[2]
        log["gpus"] = devices(outputs)
        log["n_gpu_layers"] = int(ngl[1]) if ngl else None
        if offloaded:
            log["offloaded"] = f"{offloaded[1]}/{offloaded[2]}"
        log["lines"] = [" ".join(line.split()) for line in outputs.splitlines() if BUFFER_LINE.search(line)]
        logs.append({k: v for k, v in log.items() if v is not None})
    return logs


def toml_value(value: object) -> str:
    if isinstance(value, list):
        return "[\n" + "".join(f"  {json.dumps(v)},\n" for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else str(value)


def render(git_dir: str) -> tuple[str, str]:
    paths = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "-r", "--name-only", COMMIT, "LLaMA 3/"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    rows, logs = [], []
    for path in sorted(p for p in paths if p.endswith(".ipynb") and "walkthrough" not in p):
        cells = notebook(git_dir, path)
        gpu_names = next((devices(cell_text(c)[1]) for c in cells if devices(cell_text(c)[1])), [])
        rows += bench_rows(path, cells, gpu_names)
        logs += load_logs(path, cells)
    speed = io.StringIO()
    writer = csv.DictWriter(speed, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    memory = [f"# Load logs copied by bench/extract_published.py from {REPO} at {COMMIT}.\n"
              "# lines: the log's buffer lines, whitespace collapsed.\n"]
    for log in logs:
        memory.append("\n[[log]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in log.items()))
    return speed.getvalue(), "".join(memory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("git_dir", help="the git directory of a clone of " + REPO)
    parser.add_argument("--check", action="store_true", help="compare with the files in the repository, write nothing")
    args = parser.parse_args()
    speed, memory = render(args.git_dir)
    targets = {OUT / "speed" / "xiongjiedai.csv": speed, OUT / "memory" / "xiongjiedai.toml": memory}
    if args.check:
        stale = [str(p) for p, text in targets.items() if not p.exists() or p.read_text() != text]
        print("\n".join(f"differs: {p}" for p in stale) or "both files match their source")
        return 1 if stale else 0
    for target, text in targets.items():
        target.write_text(text)
        print(f"wrote {target} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
