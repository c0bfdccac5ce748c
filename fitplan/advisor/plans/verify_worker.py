"""One real run in its own process, so that its peak RSS (VmHWM) is the run's alone.

Reads a JSON job on stdin, prints one JSON object on stdout:
  {"mode": "prepare", "runtime", "source"}  ->  {"source": {...}}   (e.g. a GGUF converted for transformers)
  {"mode": "measure", "runtime", "source", "setup", "layers", "prompt_tokens", "gen_tokens", "repeat"}
      ->  {"load_s", "runs": [...], "peak_rss_bytes", "baseline_rss_bytes", "gpu_peak_bytes"}
Errors become {"error": "one line"} and exit code 3.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any


def vm_hwm_bytes() -> int:
    """Peak resident set of this process (Linux /proc), or ru_maxrss elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _gpu_peak_bytes() -> dict[str, int]:
    """torch's reserved peak per CUDA device, where torch with CUDA is already loaded."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {}
    return {f"gpu{i}": int(torch.cuda.max_memory_reserved(i)) for i in range(torch.cuda.device_count())}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    from fitplan.plan_spec import ModelSource, Setup
    from fitplan.strategies.registry import executor

    runtime = executor(job["runtime"])
    source = ModelSource(**job["source"])
    if job["mode"] == "prepare":
        return {"source": dataclasses.asdict(runtime.prepare(source))}
    baseline = vm_hwm_bytes()
    start = time.perf_counter()
    model = runtime.open(source, Setup(**job["setup"]), layers=job["layers"])
    load_s = time.perf_counter() - start
    runs = [dataclasses.asdict(model.run(job["prompt_tokens"], job["gen_tokens"])) for _ in range(job["repeat"])]
    result = {"load_s": load_s, "runs": runs, "peak_rss_bytes": vm_hwm_bytes(), "baseline_rss_bytes": baseline,
              "gpu_peak_bytes": _gpu_peak_bytes()}
    model.close()
    return result


def main() -> None:
    try:
        result = run_job(json.loads(sys.stdin.read()))
    except Exception as exc:  # reported to the parent as one line; the parent decides what to say
        print(json.dumps({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]}))
        sys.exit(3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
