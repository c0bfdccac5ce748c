"""Executable plans on the real runtimes and the real SmolLM2 GGUF: the plan file, `fitplan run`,
`fitplan.load`, streaming, speculative decoding, exports and `--serve`."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import fitplan

FITPLAN = Path(sys.executable).with_name("fitplan")
PROMPT = "The capital of France is"
REPEAT_PROMPT = "one two three four five six seven eight nine ten. one two three four five six seven eight nine ten. one two"


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(FITPLAN), *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def write_plan(gguf: str, folder: Path, name: str, *extra: str, edit: Any = None) -> Path:
    """advise -o on this machine (one thread, context 1024), optionally edited as data."""
    path = folder / name
    run = cli("advise", gguf, "--context", "1024", "--threads", "1", *extra, "-o", str(path))
    assert run.returncode == 0, run.stderr
    if edit is not None:
        doc = json.loads(path.read_text())
        edit(doc)
        path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def llama_plan(smollm2_gguf: str, module_cache: Path) -> Path:
    return write_plan(smollm2_gguf, module_cache, "llama.json", "--runtime", "llama.cpp")


def test_plan_file_is_versioned_data_with_a_schema(llama_plan: Path) -> None:
    """advise -o writes a versioned plan with the file's fingerprint; `fitplan schema plan` publishes its schema."""
    doc = json.loads(llama_plan.read_text())
    assert doc["kind"] == "fitplan-plan" and doc["schema_version"] == 1
    assert doc["model"]["fingerprint"].startswith("sha256-ends:") and doc["plan"]["weights"] == "Q4_1"
    schema = json.loads(cli("schema", "plan").stdout)
    assert schema["properties"]["schema_version"] and schema["$defs"]["PlanSetup"]["additionalProperties"] is False


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(schema_version=2), "plan schema version 2; this fitplan reads version 1: upgrade fitplan"),
    (lambda d: d.update(schema_version=0), "write the plan again with advise -o"),
    (lambda d: d["plan"].update(temperature=0.7), "plan.temperature: Extra inputs are not permitted"),
    (lambda d: d["plan"].update(kv_cache="q8_0", flash_attn=False), "a q8_0 KV cache needs flash_attn in llama.cpp"),
    (lambda d: d["plan"].update(weights="nf4"), "weights nf4 run on transformers, not on llama.cpp"),
    (lambda d: d["plan"].update(runtime="__import__('os')"),
     "plan.runtime: unknown runtime \"__import__('os')\"; known: llama.cpp, transformers, onnxruntime"),
    (lambda d: d.pop("kind"), "is not a fitplan plan file"),
    (lambda d: d["model"].update(fingerprint="sha256-ends:0"), "changed since the plan was made"),
])
def test_bad_plans_are_one_line_errors(llama_plan: Path, tmp_path: Path, edit: Any, message: str) -> None:
    """A plan of another schema version, with an unknown field, an impossible combination or changed
    weights: one line, exit 2, nothing run."""
    doc = json.loads(llama_plan.read_text())
    edit(doc)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    run = cli("run", str(bad), "--prompt", "x", "--max-tokens", "2")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and message in run.stderr, run.stderr


def test_run_streams_and_matches_load_and_the_exported_python(llama_plan: Path, tmp_path: Path) -> None:
    """`fitplan run`, `fitplan.load(...).generate` and the exported Python snippet give the same greedy text."""
    run = cli("run", str(llama_plan), "--prompt", PROMPT, "--max-tokens", "16")
    assert run.returncode == 0, run.stderr
    assert "16 generated" in run.stderr
    with fitplan.load(str(llama_plan)) as handle:
        text = handle.generate(PROMPT, max_tokens=16)
        assert handle.metering["generated_tokens"] == 16 and handle.metering["prompt_tokens"] == 5
    assert run.stdout == text + "\n" and len(text) > 10
    snippet = tmp_path / "plan.py"
    snippet.write_text(cli("export", str(llama_plan), "--to", "python", "--max-tokens", "16").stdout)
    exported = subprocess.run([sys.executable, str(snippet), PROMPT], capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == text + "\n"


def test_first_piece_arrives_before_generation_ends(llama_plan: Path) -> None:
    """Streaming: the first piece comes long before the last (64 tokens), stop strings end the stream."""
    with fitplan.load(str(llama_plan)) as handle:
        start = time.perf_counter()
        arrivals = [time.perf_counter() - start for _ in handle.stream(PROMPT, max_tokens=64)]
        assert len(arrivals) > 10 and arrivals[0] < arrivals[-1] / 2
        assert handle.generate(PROMPT, max_tokens=32, stop=["."]) == " Paris"
        assert handle.generate_batch([PROMPT, "1, 2, 3,"], max_tokens=4) == [handle.generate(PROMPT, max_tokens=4),
                                                                           handle.generate("1, 2, 3,", max_tokens=4)]


def test_prompt_lookup_keeps_greedy_output_llamacpp(smollm2_gguf: str, module_cache: Path, llama_plan: Path) -> None:
    """llama.cpp with prompt-lookup drafting returns exactly the plain greedy text."""
    def lookup(doc: dict) -> None:
        doc["plan"]["speculative"] = {"draft": "prompt-lookup", "draft_tokens": 4, "acceptance": 0.5}

    plan = write_plan(smollm2_gguf, module_cache, "lookup.json", "--runtime", "llama.cpp", edit=lookup)
    with fitplan.load(str(llama_plan)) as plain, fitplan.load(str(plan)) as drafted:
        assert drafted.generate(REPEAT_PROMPT, max_tokens=24) == plain.generate(REPEAT_PROMPT, max_tokens=24)


def test_ctrl_c_stops_cleanly(llama_plan: Path) -> None:
    """SIGINT during a long generation: exit 130, a 'stopped' line, no traceback."""
    proc = subprocess.Popen([str(FITPLAN), "run", str(llama_plan), "--prompt", PROMPT, "--max-tokens", "900"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.read(8)  # generation has started
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "stopped" in err and "Traceback" not in err, err


def test_a_plan_without_local_weights_is_refused(tmp_path: Path) -> None:
    """A catalog model has no local file: run says where the weights would come from, exit 2."""
    run = cli("run", "llama-3.1-8b", "--prompt", "x")
    assert run.returncode == 2 and "no local weights" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sse_chunks(port: int, body: dict, deadline: float) -> list[dict]:
    while True:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{body.pop('_path')}", json.dumps(body).encode(),
                                             {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                lines = response.read().decode().splitlines()
            return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        except (ConnectionError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            body["_path"] = request.selector
            time.sleep(0.5)


def _served(args: list[str], port: int, body: dict) -> list[dict]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return _sse_chunks(port, body, time.monotonic() + 120)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_answers_a_streaming_chat_request(llama_plan: Path) -> None:
    """`fitplan run --serve` on loopback answers a streaming chat completion with SSE chunks."""
    pytest.importorskip("uvicorn")
    port = _free_port()
    chunks = _served([str(FITPLAN), "run", str(llama_plan), "--serve", "--port", str(port)], port,
                     {"_path": "/v1/chat/completions", "messages": [{"role": "user", "content": "Say hello."}],
                      "max_tokens": 8, "stream": True, "temperature": 0})
    assert len(chunks) > 2 and any(c["choices"][0]["delta"].get("content") for c in chunks)


def test_exported_shell_command_gives_the_same_first_tokens(llama_plan: Path) -> None:
    """The exported `python -m llama_cpp.server ...` command serves the same greedy text as fitplan run."""
    pytest.importorskip("uvicorn")
    port = _free_port()
    command = cli("export", str(llama_plan), "--to", "shell").stdout.strip().replace("--port 8000", f"--port {port}")
    assert command.startswith("python -m llama_cpp.server ")
    args = [sys.executable, *command.split()[1:]]
    chunks = _served(args, port, {"_path": "/v1/completions", "prompt": PROMPT, "max_tokens": 8, "stream": True,
                                  "temperature": 0, "top_k": 1, "repeat_penalty": 1.0})
    with fitplan.load(str(llama_plan)) as handle:
        assert "".join(c["choices"][0]["text"] for c in chunks) == handle.generate(PROMPT, max_tokens=8)


@pytest.fixture(scope="module")
def transformers_plans(smollm2_gguf: str, module_cache: Path) -> dict[str, Path]:
    pytest.importorskip("transformers")
    return {w: write_plan(smollm2_gguf, module_cache, f"hf-{w}.json", "--runtime", "transformers", "--weights", w)
            for w in ("fp32", "bf16")}


@pytest.mark.parametrize("weights", ["fp32", "bf16"])
def test_transformers_runs_the_gguf_and_matches_its_export(transformers_plans: dict[str, Path], weights: str,
                                                           tmp_path: Path) -> None:
    """transformers fp32/bf16 loaded from the GGUF: `fitplan run` and the exported Python give the same text."""
    plan = transformers_plans[weights]
    run = cli("run", str(plan), "--prompt", PROMPT, "--max-tokens", "12")
    assert run.returncode == 0, run.stderr
    assert f"transformers {weights}" in run.stderr and len(run.stdout.strip()) > 5
    snippet = tmp_path / "plan.py"
    snippet.write_text(cli("export", str(plan), "--to", "python", "--max-tokens", "12").stdout)
    exported = subprocess.run([sys.executable, str(snippet), PROMPT], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == run.stdout.strip()
    if weights == "fp32":  # the shell form: the same script in a heredoc, the prompt as its first argument
        shell = cli("export", str(plan), "--to", "shell", "--max-tokens", "12").stdout
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        done = subprocess.run(["bash", "-c", shell, "fitplan-export", PROMPT], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "PATH": path})
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == run.stdout.strip()


def test_transformers_speculation_keeps_greedy_output(smollm2_gguf: str, module_cache: Path,
                                                      transformers_plans: dict[str, Path]) -> None:
    """fp32 target: prompt lookup and a bf16 draft of the same model both return the plain greedy tokens."""
    def drafted(draft: str, weights: str | None) -> Any:
        def edit(doc: dict) -> None:
            doc["plan"]["speculative"] = {"draft": draft, "draft_weights": weights, "draft_tokens": 4, "acceptance": 0.5}
        return edit

    lookup = write_plan(smollm2_gguf, module_cache, "hf-lookup.json", "--runtime", "transformers", "--weights", "fp32",
                        edit=drafted("prompt-lookup", None))
    copy = write_plan(smollm2_gguf, module_cache, "hf-draft.json", "--runtime", "transformers", "--weights", "fp32",
                      edit=drafted(smollm2_gguf, "bf16"))
    with fitplan.load(str(transformers_plans["fp32"])) as plain:
        expected = plain.generate(REPEAT_PROMPT, max_tokens=16)
        assert plain.metering["generated_tokens"] == 16
    for plan in (lookup, copy):
        with fitplan.load(str(plan)) as handle:
            assert handle.generate(REPEAT_PROMPT, max_tokens=16) == expected, plan.name


def test_disk_offload_plan_runs_through_accelerate(smollm2_gguf: str, module_cache: Path,
                                                    transformers_plans: dict[str, Path]) -> None:
    """--disk-layers 10: the last 10 blocks on disk (accelerate, offload_folder), the plan says so, and
    the greedy text equals the all-in-RAM fp32 plan's."""
    plan = write_plan(smollm2_gguf, module_cache, "hf-disk.json", "--runtime", "transformers", "--weights", "fp32",
                      "--disk-layers", "10")
    doc = json.loads(plan.read_text())
    assert doc["plan"]["placement"] == "disk" and doc["plan"]["disk_layers"] == 10
    assert doc["predicted"]["memory"]["disk"]["weights"] > 0
    with fitplan.load(str(plan)) as handle:
        placed = handle._session.model.hf_device_map
        assert [placed[f"model.layers.{i}"] for i in (0, 19, 20, 29)] == ["cpu", "cpu", "disk", "disk"]
        offloaded = handle.generate(PROMPT, max_tokens=12)
    with fitplan.load(str(transformers_plans["fp32"])) as plain:
        assert offloaded == plain.generate(PROMPT, max_tokens=12)


@pytest.mark.parametrize(("prune", "zeros"), [("unstructured:0.5", 0.5), ("2:4", 0.5)])
def test_pruned_plan_zeroes_block_weights_in_dense_storage(smollm2_gguf: str, module_cache: Path, prune: str,
                                                           zeros: float) -> None:
    """--prune: every block linear layer loses half its weights (magnitude), stored dense on the CPU:
    the parameter bytes stay the dense model's (no sparse kernel here), as the plan says."""
    plan = write_plan(smollm2_gguf, module_cache, f"hf-{prune.replace(':', '-')}.json", "--runtime", "transformers",
                      "--weights", "fp32", "--prune", prune)
    assert json.loads(plan.read_text())["plan"]["pruning"]["sparse_kernels"] is False
    with fitplan.load(str(plan)) as handle:
        model = handle._session.model
        linears = [m.weight for n, m in model.named_modules() if type(m).__name__ == "Linear" and ".layers." in n]
        zeroed = sum(int((w == 0).sum()) for w in linears) / sum(w.numel() for w in linears)
        assert abs(zeroed - zeros) < 0.001 and len(linears) == 7 * 30
        assert sum(p.numel() for p in model.parameters()) == 134_515_008
        assert handle.generate(PROMPT, max_tokens=4)


@pytest.mark.parametrize("weights", ["nf4", "bnb-int8"])
def test_bitsandbytes_runs_on_the_cpu_when_pinned(smollm2_gguf: str, module_cache: Path, weights: str, tmp_path: Path) -> None:
    """bitsandbytes 0.50 runs on the CPU: a pinned nf4 / int8 plan loads quantized (footprint under the
    fp32 model's 538 MB) and the exported Python prints the same text."""
    pytest.importorskip("bitsandbytes")
    plan = write_plan(smollm2_gguf, module_cache, f"hf-{weights}.json", "--weights", weights)
    assert json.loads(plan.read_text())["plan"]["placement"] == "cpu"
    with fitplan.load(str(plan)) as handle:
        assert handle._session.model.get_memory_footprint() < 0.35 * 538_060_032
        text = handle.generate(PROMPT, max_tokens=12)
    snippet = tmp_path / "plan.py"
    snippet.write_text(cli("export", str(plan), "--to", "python", "--max-tokens", "12").stdout)
    exported = subprocess.run([sys.executable, str(snippet), PROMPT], capture_output=True, text=True, timeout=600)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == text.strip() and len(text) > 5


def test_dynamic_int8_plan_runs_quantized_and_matches_its_export(smollm2_gguf: str, module_cache: Path,
                                                                tmp_path: Path) -> None:
    """int8-dynamic: the 210 block linear layers become torch's DynamicQuantizedLinear after an fp32 load (the
    embedding and tied head stay fp32), the plan's weight bytes are int8 + 12 bytes per output channel,
    `fitplan run` and the exported Python print the same text, and transformers serve is refused in one line."""
    plan = write_plan(smollm2_gguf, module_cache, "hf-int8.json", "--runtime", "transformers", "--weights", "int8-dynamic")
    doc = json.loads(plan.read_text())
    assert (doc["plan"]["weights"], doc["plan"]["kv_cache"], doc["plan"]["placement"]) == ("int8-dynamic", "f32", "cpu")
    assert "quantize_dynamic" in doc["plan"]["weights_source"]["how"]
    block_matrices = 30 * (576 * 576 * 2 + 576 * 192 * 2 + 576 * 1536 * 3)
    rows = 30 * (576 * 2 + 192 * 2 + 1536 * 2 + 576)
    rest = 134_515_008 - block_matrices  # embedding and norms, fp32
    assert doc["predicted"]["memory"]["cpu"]["weights"] == block_matrices + rows * 12 + rest * 4
    with fitplan.load(str(plan)) as handle:
        model = handle._session.model
        quantized = [n for n, m in model.named_modules() if type(m).__module__.endswith("quantized.dynamic.modules.linear")]
        assert len(quantized) == 210 and all(".layers." in n for n in quantized)
        assert type(model.lm_head).__module__ == "torch.nn.modules.linear"
        text = handle.generate(PROMPT, max_tokens=12)
    run = cli("run", str(plan), "--prompt", PROMPT, "--max-tokens", "12")
    assert run.returncode == 0 and run.stdout.strip() == text.strip() and len(text) > 5, run.stderr
    snippet = tmp_path / "plan.py"
    snippet.write_text(cli("export", str(plan), "--to", "python", "--max-tokens", "12").stdout)
    exported = subprocess.run([sys.executable, str(snippet), PROMPT], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == text.strip()
    served = cli("run", str(plan), "--serve", "--port", "8765")
    assert served.returncode == 2 and "has no int8-dynamic option" in served.stderr, served.stderr


def test_int8_dynamic_refuses_a_layout_it_cannot_quantize_and_steps_only_plain_greedy() -> None:
    """A model without nn.Linear layers under '.layers.' would stay fp32 while the plan sized it as int8: one
    line instead. Stepping greedily in the caller is used only where generate() would add no logits processor."""
    import torch
    from transformers import GenerationConfig

    from fitplan.errors import BadValueError
    from fitplan.strategies.runtimes.transformers.session import plain_greedy, quantize_dynamic_int8

    other = torch.nn.ModuleDict({"h": torch.nn.ModuleList([torch.nn.Linear(8, 8)])})
    with pytest.raises(BadValueError, match="int8-dynamic quantizes nn.Linear layers under '.layers.'"):
        quantize_dynamic_int8(other)
    assert plain_greedy(GenerationConfig(bos_token_id=1, eos_token_id=2))
    assert not plain_greedy(GenerationConfig(repetition_penalty=1.05))
    assert not plain_greedy(GenerationConfig(no_repeat_ngram_size=3))


def test_serve_a_transformers_plan(transformers_plans: dict[str, Path]) -> None:
    """`fitplan run --serve` on a transformers plan starts `transformers serve` with the model preloaded
    (the name to request is on the first stderr line); a streaming chat request answers with SSE chunks."""
    pytest.importorskip("uvicorn")
    port = _free_port()
    proc = subprocess.Popen([str(FITPLAN), "run", str(transformers_plans["fp32"]), "--serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # the announcement comes before the server starts, after any warnings
            seen.append(line)
            if "request model " in line:
                break
        announced = seen[-1] if seen else ""
        assert "request model " in announced, "".join(seen)
        model = announced.split("request model ")[1].strip().strip('"')
        chunks = _sse_chunks(port, {"_path": "/v1/chat/completions", "model": model, "max_tokens": 8, "stream": True,
                                    "messages": [{"role": "user", "content": "Say hello."}]}, time.monotonic() + 180)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert len(chunks) > 2 and any(c["choices"][0]["delta"].get("content") for c in chunks if c.get("choices"))


def test_llama_server_export_of_a_two_gpu_plan(tmp_path: Path) -> None:
    """A 70B plan on 2x RTX 4090: the llama-server flags give equal --tensor-split shares, the split the
    memory model places by llama.cpp's rule (whatever memory is free); the model file is named for the
    GGUF the plan says to make."""
    plan = tmp_path / "70b.json"
    made = cli("advise", "llama-3.1-70b", "--hardware", "2xrtx-4090-24gb", "-o", str(plan))
    assert made.returncode == 0, made.stderr
    command = cli("export", str(plan), "--to", "llama-server").stdout
    assert "--tensor-split 1,1" in command and "--n-gpu-layers all" in command
    assert "--model llama-3.1-70b-Q4_K_M.gguf" in command
    refused = cli("export", str(plan), "--to", "python")
    assert refused.returncode == 2 and "no local weights" in refused.stderr


def test_vllm_and_tensorrt_llm_say_why_not_here_and_export_their_commands(tmp_path: Path) -> None:
    """On a machine without them (or without an NVIDIA GPU), --serve --server vllm|tensorrt-llm is one line
    naming what is missing; the exports still print each runtime's own server command."""
    plan = tmp_path / "8b.json"
    assert cli("advise", "llama-3.1-8b", "--hardware", "a100-80gb", "--runtime", "transformers", "--weights", "bf16",
               "-o", str(plan)).returncode == 0
    hub = json.loads(plan.read_text())["model"]["hub_id"]
    vllm = cli("export", str(plan), "--to", "vllm").stdout
    assert vllm.startswith(f"vllm serve {hub} --dtype bfloat16 --max-model-len 8192 --tensor-parallel-size 1")
    trt = cli("export", str(plan), "--to", "tensorrt-llm").stdout
    assert trt.startswith(f"trtllm-serve {hub} --backend pytorch --tp_size 1")
    for server, name in (("vllm", "vLLM"), ("tensorrt-llm", "TensorRT-LLM")):
        if importlib.util.find_spec(server.replace("-", "_")) is not None:
            continue  # installed here: nothing to refuse
        run = cli("run", str(plan), "--serve", "--server", server)
        assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert f"{name} cannot run here: {server} is not installed" in run.stderr


def test_gptq_plan_needs_a_gptq_checkpoint(smollm2_gguf: str, module_cache: Path, tmp_path: Path) -> None:
    """A GPTQ plan on a model that is no GPTQ checkpoint is refused in one line (fitplan does not quantize
    to GPTQ, and never pretends a checkpoint exists)."""
    from fitplan.advisor.plans.plan_file import parse_plan

    doc = json.loads(write_plan(smollm2_gguf, module_cache, "gptq-base.json", "--runtime", "transformers",
                                "--weights", "fp32").read_text())
    doc["plan"]["weights"] = "gptq-4bit-g128"
    doc["plan"]["weights_source"] = {"kind": "existing files"}
    with pytest.raises(Exception, match=r"needs a GPTQ checkpoint \(config.json quantization_config quant_method 'gptq'\)"):
        fitplan.load(parse_plan(doc))


def test_run_a_model_with_pins(smollm2_gguf: str, module_cache: Path) -> None:
    """`fitplan run MODEL --runtime llama.cpp --context 512 --threads 1` plans for this machine with those pins and
    runs; pins on a plan file are refused in one line."""
    run = cli("run", smollm2_gguf, "--runtime", "llama.cpp", "--context", "512", "--threads", "1",
              "--prompt", PROMPT, "--max-tokens", "8")
    assert run.returncode == 0 and "[llama.cpp Q4_1:" in run.stderr and "8 generated" in run.stderr, run.stderr
    refused = cli("run", "plan.json", "--threads", "2", "--prompt", PROMPT)
    assert refused.returncode == 2 and "is a plan file already" in refused.stderr
