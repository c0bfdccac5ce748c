"""One real run in its own process, so that its peak RSS (VmHWM) is the run's alone.

Reads a JSON job on stdin, prints one JSON object on stdout:
  {"mode": "prepare", "runtime", "source"}  ->  {"source": {...}}   (e.g. a GGUF converted for transformers)
  {"mode": "measure", "runtime", "source", "setup", "layers", "prompt_tokens", "gen_tokens", "repeat",
   "budget_s" (optional: stop repeating before the runs pass it, load included)}
      ->  {"load_s", "runs": [...], "peak_rss_bytes", "baseline_rss_bytes", "gpu_peak_bytes",
           "cpu": {"window_s", "others_cores", "cpus"} or null (other processes' CPU use during the runs)}
Errors become {"error": "one line"} and exit code 3.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
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


def timed_runs(run: Callable[[], dict[str, Any]], *, repeat: int, budget_s: float | None, started: float,
               clock: Callable[[], float] = time.perf_counter) -> list[dict[str, Any]]:
    """Up to `repeat` runs; with a budget (seconds since `started`), stop when the last run's length says
    the next would end past it. The first always runs: a probe with no run has nothing to say."""
    runs: list[dict[str, Any]] = []
    while len(runs) < repeat:
        before = clock()
        runs.append(run())
        now = clock()
        if budget_s is not None and now - started + (now - before) > budget_s:
            break
    return runs


def _others_during(runs: Callable[[], list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], dict[str, float] | None]:
    """The runs, and how many cores other processes kept busy meanwhile (None where it cannot be read)."""
    from fitplan.profiles.probes import cpu_sample, others_cores

    before, start = cpu_sample(), time.perf_counter()
    done = runs()
    after, window_s = cpu_sample(), time.perf_counter() - start
    if before is None or after is None:
        return done, None
    return done, {"window_s": window_s, "others_cores": others_cores(before, after, window_s), "cpus": after.cpus}


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

    def one() -> dict[str, Any]:
        return dataclasses.asdict(model.run(job["prompt_tokens"], job["gen_tokens"]))

    runs, cpu = _others_during(lambda: timed_runs(one, repeat=job["repeat"], budget_s=job.get("budget_s"),
                                                  started=start))
    result = {"load_s": load_s, "runs": runs, "peak_rss_bytes": vm_hwm_bytes(), "baseline_rss_bytes": baseline,
              "gpu_peak_bytes": _gpu_peak_bytes(), "cpu": cpu}
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
