"""What `fitplan verify` and the runtime probe of `advise --probe` do, apart from parsing and printing."""
from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

from fitplan.advisor.planner.calibration import (
    ProbeLimits,
    age_text,
    fit_entry,
    key,
    load_calibration,
    refusal,
    save_entry,
    summarize_runs,
)
from fitplan.advisor.planner.speed import Efficiency, SpeedPrediction, default_efficiency, plan_speed
from fitplan.advisor.plans.verify import measure, ratio
from fitplan.errors import BadValueError, FitplanError
from fitplan.model_spec import ModelSpec
from fitplan.plan_spec import Setup
from fitplan.strategies.quantization import tensor_bytes
from fitplan.strategies.registry import cost_model, normalize_runtime, weight_format

if TYPE_CHECKING:
    from rich.console import Console

    from fitplan.advisor.planner.candidates import Candidate
    from fitplan.hardware_spec import HardwareSpec
    from fitplan.profiles.probes import MachineProbes

RECORDED = {"placement", "context_note", "weights_source", "pruning"}  # what a plan file notes, not a choice
# a prompt long enough that prefill is compute-bound, as it is at real prompt lengths
PROBE_PROMPT_TOKENS, PROBE_GEN_TOKENS = 128, 16
# repeated, best runs kept (calibration.best_runs), within 40 s for loading and running (a one-time
# conversion, cached, is not counted)
# on a 2-core machine; a small model stops at PROBE_MAX_RUNS long before (SmolLM2-135M: ~6 s)
PROBE_BUDGET_S, PROBE_MAX_RUNS = 40.0, 8
PROBE_LIMITS = ProbeLimits()


def default_setup(spec: ModelSpec, hw: HardwareSpec, *, runtime: str | None = None, weights: str | None = None,
                  context: int | None = None, threads: int | None = None, flash_attn: bool | None = None,
                  gpu_layers: int | None = None, kv_cache: str | None = None) -> Setup:
    """The plan verify runs when nothing is pinned: the model's own weights, all layers on the GPUs."""
    runtime = normalize_runtime(runtime) if runtime else ("llama.cpp" if spec.source == "gguf" else "transformers")
    if weights is None:
        weights = spec.native_dtype if runtime == "llama.cpp" else ("bf16" if hw.gpus else "fp32")
    fmt = weight_format(weights, runtime=runtime)
    if fmt.runtime != runtime:
        raise BadValueError(f"--weights {fmt.name} runs on {fmt.runtime}, not on {runtime}")
    kv = kv_cache or ("f16" if runtime == "llama.cpp" else {"fp32": "f32", "bf16": "bf16"}.get(fmt.name, "f16"))
    gpus = len(hw.gpus)
    layers = (spec.layers if gpus else 0) if gpu_layers is None else min(gpu_layers, spec.layers if gpus else 0)
    flash = runtime == "llama.cpp" if flash_attn is None else (flash_attn and runtime == "llama.cpp")
    return Setup(runtime=runtime, weights=fmt.name, kv_cache=kv, context=context or min(spec.max_context, 2048), batch=1,
                 threads=threads or hw.cpu.cores, gpu_layers=layers, gpus=gpus if layers else 0, flash_attn=flash)


def _plan_from_file(path: str) -> tuple[ModelSpec, dict[str, Any]]:
    from fitplan.advisor.models.resolve import resolve_model
    from fitplan.advisor.plans.plan_file import check_fingerprint, load_plan

    plan = load_plan(path)
    check_fingerprint(plan)
    setup = plan.plan
    if setup.placement in ("exact", "experts-cpu"):
        raise BadValueError(f"{path}: verify cannot run a plan with {setup.placement!r} placement yet (it needs "
                            "llama.cpp tensor overrides, which llama-cpp-python does not expose)")
    pins = {"runtime": setup.runtime, "weights": setup.weights, "context": setup.context, "threads": setup.threads,
            "flash_attn": setup.flash_attn, "gpu_layers": setup.gpu_layers, "kv_cache": setup.kv_cache}
    return resolve_model(plan.model.location), pins


def verify_plan(model: str, *, prompt_tokens: int, gen_tokens: int, repeat: int, **pins: Any) -> dict[str, Any]:
    from fitplan.advisor.models.resolve import resolve_model
    from fitplan.profiles.named import hardware

    if model.endswith(".json") and os.path.isfile(model):
        spec, from_file = _plan_from_file(model)
        pins = {**from_file, **{k: v for k, v in pins.items() if v is not None}}
    else:
        spec = resolve_model(model)
    hw = hardware("auto", beside=spec.location)
    setup = default_setup(spec, hw, **pins)
    if prompt_tokens + gen_tokens > setup.context:
        raise BadValueError(f"--prompt-tokens + --gen-tokens ({prompt_tokens + gen_tokens}) exceed the context {setup.context}")
    measured = measure(spec, setup, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, repeat=repeat)
    return verify_document(spec, hw, setup, measured, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens)


def predicted_for_run(spec: ModelSpec, hw: HardwareSpec, setup: Setup, *, prompt_tokens: int, gen_tokens: int,
                      efficiency: Efficiency | None) -> tuple[dict[str, Any], SpeedPrediction]:
    """Memory and speed predicted for exactly the run verify makes."""
    from fitplan.profiles.probes import load_cached

    weights = tensor_bytes(spec, weight_format(setup.weights))
    runtime = cost_model(setup.runtime)
    # a cache that grows (transformers) holds the tokens of the run; llama.cpp's is allocated whole
    memory_setup = setup if runtime.preallocates_kv else setup.with_(context=prompt_tokens + gen_tokens)
    memory = runtime.memory(spec, memory_setup, weights, prompt_tokens=prompt_tokens)
    speed = plan_speed(spec, setup, weights, hw, probes=load_cached(hw), efficiency=efficiency,
                       prompt_tokens=prompt_tokens)
    return {d: m.as_dict() for d, m in memory.items()}, speed


def verify_document(spec: ModelSpec, hw: HardwareSpec, setup: Setup, measured: dict[str, Any], *,
                    prompt_tokens: int, gen_tokens: int) -> dict[str, Any]:
    from fitplan.advisor.planner.estimate import efficiency_for
    from fitplan.profiles.probes import fingerprint

    calibrated = efficiency_for(load_calibration(fingerprint(hw)), setup.runtime, setup.gpu_layers)
    memory, speed = predicted_for_run(spec, hw, setup, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens,
                                      efficiency=calibrated)
    _, estimated = predicted_for_run(spec, hw, setup, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens,
                                     efficiency=default_efficiency())
    summary = summarize_runs(measured["runs"])
    rows = [{"metric": "peak memory cpu (process RSS)", "unit": "bytes", "predicted": memory["cpu"]["total"],
             "measured": measured["peak_rss_bytes"], "provenance": "estimated"}]
    for device, peak in measured.get("gpu_peak_bytes", {}).items():
        if device in memory:
            rows.append({"metric": f"peak memory {device} (torch reserved)", "unit": "bytes",
                         "predicted": memory[device]["total"] - memory[device]["overhead"], "measured": peak,
                         "provenance": "estimated"})
    for metric, unit in (("prefill_tokens_per_s", "tok/s"), ("decode_tokens_per_s", "tok/s"), ("ttft_s", "s")):
        if metric in summary:
            rows.append({"metric": metric, "unit": unit, "predicted": getattr(speed, metric),
                         "uncalibrated": getattr(estimated, metric), "measured": summary[metric]["median"],
                         "spread": [summary[metric]["min"], summary[metric]["max"]], "provenance": speed.provenance})
    for row in rows:
        row["ratio"] = ratio(row["predicted"], row["measured"])
    return {
        "model": {"name": spec.name, "location": spec.location, "parameters": spec.parameters},
        "hardware": {"name": hw.name, "cpu": hw.cpu.name, "gpus": [g.name for g in hw.gpus]},
        "plan": setup.model_dump(mode="json", exclude=RECORDED),
        "workload": {"prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens, "repeat": len(measured["runs"])},
        "predicted": {"memory": memory, **speed.as_dict(),
                      "provenance": {"memory": "estimated", "speed": speed.provenance, "speed_basis": speed.basis}},
        "measured": {"peak_rss_bytes": measured["peak_rss_bytes"], "baseline_rss_bytes": measured["baseline_rss_bytes"],
                     "gpu_peak_bytes": measured.get("gpu_peak_bytes", {}), "load_s": measured["load_s"],
                     "speed": summary, "runs": measured["runs"]},
        "comparison": rows,
    }


def render_verify(doc: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    from fitplan.units import format_bytes
    from fitplan.user_files import shown

    plan, work = doc["plan"], doc["workload"]

    console.print(f"[bold]{shown(doc['model']['name'])}[/] via {plan['runtime']} {plan['weights']}, context {plan['context']}, "
                  f"{plan['threads']} threads; {work['prompt_tokens']} prompt + {work['gen_tokens']} generated tokens, "
                  f"{work['repeat']} runs (medians; spread in brackets)")
    table = Table(title="predicted vs measured", title_justify="left")
    for column in ("metric", "predicted", "uncalibrated", "measured", "ratio", "provenance"):
        table.add_column(column, justify="left" if column in ("metric", "provenance") else "right")

    def show(value: float | None, unit: str) -> str:
        if value is None:
            return "-"
        return format_bytes(value) if unit == "bytes" else f"{value:.3g} {unit}"

    for row in doc["comparison"]:
        measured = show(row["measured"], row["unit"])
        if "spread" in row:
            measured += f" [{row['spread'][0]:.3g}-{row['spread'][1]:.3g}]"
        table.add_row(row["metric"], show(row["predicted"], row["unit"]), show(row.get("uncalibrated"), row["unit"]),
                      measured, "-" if row["ratio"] is None else f"{row['ratio']:.2f}", row["provenance"])
    console.print(table)


def calibrate_runtime(spec: ModelSpec, chosen: Candidate, hw: HardwareSpec, probes: MachineProbes) -> None:
    """The runtime probe: short real runs of MODEL fit this runtime's efficiencies on this machine.

    A model without local weights, a missing runtime or a failed run is reported on stderr, and
    advise answers with its uncalibrated figures; so is a probe the machine's other work disturbed
    (calibration.refusal), which is not cached: the calibration cached before, if any, stays.
    """
    from fitplan.profiles.probes import fingerprint

    if spec.source not in ("gguf", "folder"):
        sys.stderr.write(f"runtime probe skipped: {spec.name} has no local weights to run\n")
        return
    try:
        runtime, weights = chosen.setup.runtime, chosen.setup.weights
        if runtime == "llama.cpp" and spec.source != "gguf":
            sys.stderr.write("runtime probe skipped: llama.cpp runs GGUF files and this model is a folder\n")
            return
        runnable = weights == spec.native_dtype if runtime == "llama.cpp" else weights in ("fp32", "bf16", "fp16")
        setup = default_setup(spec, hw, runtime=runtime, weights=weights if runnable else None, context=512,
                              threads=chosen.setup.threads)
        started = time.perf_counter()
        measured = measure(spec, setup, prompt_tokens=PROBE_PROMPT_TOKENS, gen_tokens=PROBE_GEN_TOKENS,
                           repeat=PROBE_MAX_RUNS, budget_s=PROBE_BUDGET_S, timeout_s=600)
        probe_s = time.perf_counter() - started
        weight_bytes = tensor_bytes(spec, weight_format(setup.weights))
        at_one = plan_speed(spec, setup, weight_bytes, hw, probes=probes, efficiency=Efficiency(1.0, 1.0, "estimated"),
                            prompt_tokens=PROBE_PROMPT_TOKENS)
        entry = fit_entry(spec, setup, at_one, measured, probe_s=probe_s, created_unix=time.time())
    except FitplanError as exc:
        sys.stderr.write(f"runtime probe failed, speed stays uncalibrated: {exc}\n")
        return
    entry_key = key(setup.runtime, setup.gpu_layers)
    why = refusal(entry, PROBE_LIMITS)
    if why is None:
        save_entry(fingerprint(hw), entry_key, entry)
        return
    sys.stderr.write(f"calibration not cached: {why}; {_what_stays(fingerprint(hw), entry_key)}\n")


def _what_stays(machine: str, entry_key: str) -> str:
    """After a refused probe: the calibration the answer still uses, or that there is none."""
    cached = load_calibration(machine).entries.get(entry_key)
    if cached is None:
        return "speed stays uncalibrated (run advise --probe again on a quiet machine)"
    return f"the cached {entry_key} calibration ({age_text(time.time() - cached.created_unix)}) stays"
