"""`fitplan verify`: run a plan on the real runtime and hold every prediction against it.

The run happens in a worker process (verify_worker) so that its peak RSS is the run's alone; a
model that needs converting for the runtime (a GGUF for transformers) is prepared by an earlier
worker, so the conversion's memory never counts.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

from fitplan.errors import BadValueError, RunFailedError, RuntimeMissingError
from fitplan.model_spec import ModelSpec
from fitplan.plan_spec import ModelSource, Setup

WORKER = [sys.executable, "-m", "fitplan.advisor.plans.verify_worker"]


def model_source(spec: ModelSpec) -> ModelSource:
    """The local weights of a spec; catalog and hub models have none to run."""
    if spec.source in ("gguf", "folder"):
        return ModelSource(spec.source, spec.location)
    raise BadValueError(
        f"verify runs local weights: {spec.name} came from the {spec.source}; pass a .gguf file or a "
        "folder with config.json and *.safetensors"
    )


def run_worker(job: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """One job in a fresh process; a crash, timeout or error becomes one RunFailedError line."""
    try:
        done = subprocess.run(WORKER, input=json.dumps(job), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RunFailedError(f"{job['runtime']} {job['mode']} run timed out after {timeout_s:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        result = {}
    if done.returncode != 0 or "error" in result or not result:
        why = result.get("error") or (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise RunFailedError(f"{job['runtime']} {job['mode']} run failed: {why}")
    return result


def measure(
    spec: ModelSpec, setup: Setup, *, prompt_tokens: int, gen_tokens: int, repeat: int, timeout_s: float = 900,
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Prepare (if needed) and run the plan; the worker's measurements, untouched.

    With `budget_s`, `repeat` is a most: the worker stops repeating before loading and the runs
    together pass the budget (the runtime probe's time limit). Preparing is not counted: it is the
    one-time conversion a cache keeps (a GGUF to safetensors for transformers), not part of a probe.
    """
    from fitplan.strategies.registry import executor

    missing = executor(setup.runtime).missing()
    if missing:
        raise RuntimeMissingError(f"cannot run {setup.runtime}: {missing}")
    source = model_source(spec)
    prepared = run_worker({"mode": "prepare", "runtime": setup.runtime, "source": asdict(source)}, timeout_s=timeout_s)
    started = time.perf_counter()
    job = {"mode": "measure", "runtime": setup.runtime, "source": prepared["source"],
           "setup": setup.model_dump(mode="json"), "layers": spec.layers, "prompt_tokens": prompt_tokens,
           "gen_tokens": gen_tokens, "repeat": repeat}
    if budget_s is not None:
        job["budget_s"] = budget_s - (time.perf_counter() - started)
    return run_worker(job, timeout_s=timeout_s)


def ratio(predicted: float | None, measured: float | None) -> float | None:
    if not predicted or not measured:
        return None
    return round(predicted / measured, 3)
