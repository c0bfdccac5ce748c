"""The command line: `fitplan advise|profile|models|hardware|quality|run|export|check|schema|strategies|verify` and the
`advise` shortcut.

Thin on purpose: commands parse and print, library functions do the work. Every user error is one
line on stderr and exit code 2, in place of the CLI library's usage panels.
"""
from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, Optional

import typer

from fitplan.errors import BadValueError, FitplanError

if TYPE_CHECKING:
    from fitplan.advisor.planner.calibration import Calibration
    from fitplan.advisor.planner.candidates import Advice, Candidate, Request
    from fitplan.advisor.plans.plan_file import PlanFile
    from fitplan.hardware_spec import HardwareSpec
    from fitplan.model_spec import ModelSpec
    from fitplan.profiles.probes import MachineProbes
    from fitplan.strategies.strategy import Option

RESERVE_HELP = "memory every plan leaves free on each GPU, e.g. 2GiB (default 1 GiB, as llama.cpp --fit; 0: none)"
RUNTIMES, EXPORTS = "{runtimes}", "{exports}"  # filled from the registry when help is shown (_fill_help)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Will this model fit, and how should I run it?")


@app.command("advise")
def advise_command(
    model: str = typer.Argument(..., help="a .gguf file, a folder with config.json, a catalog name or a hub id"),
    hardware: str = typer.Option("auto", "--hardware", help="auto (this machine), a profile name, Nx<name>, or a .toml path"),
    context: Optional[str] = typer.Option(None, "--context", help="tokens per sequence (default: min(model max, 8192))"),
    batch: str = typer.Option("1", "--batch", help="parallel sequences"),
    threads: Optional[str] = typer.Option(None, "--threads", help="CPU threads (default: physical cores)"),
    runtime: Optional[str] = typer.Option(None, "--runtime", help=f"pin the runtime: {RUNTIMES}"),
    weights: Optional[str] = typer.Option(None, "--weights", help="pin the weight format, e.g. Q4_K_M, bf16, nf4"),
    kv_cache: Optional[str] = typer.Option(None, "--kv-cache", help="pin the KV cache type: f16, bf16, f32, q8_0, q4_0"),
    max_vram: Optional[str] = typer.Option(None, "--max-vram", help="per-GPU budget, e.g. 12GB (0GB: no GPU)"),
    max_ram: Optional[str] = typer.Option(None, "--max-ram", help="host RAM budget, e.g. 16GiB"),
    reserve: Optional[str] = typer.Option(None, "--reserve", help=RESERVE_HELP),
    ram: Optional[str] = typer.Option(None, "--ram", help="host RAM of the profile, e.g. 32GB"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document"),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="also write the plan file here (never overwrites)"),
    probe: bool = typer.Option(False, "--probe", help="measure this machine (cached) and calibrate the runtime on MODEL"),
    objective: str = typer.Option("balanced", "--objective", help="balanced | quality | speed | throughput"),
    min_tokens_per_s: Optional[str] = typer.Option(None, "--min-tokens-per-s", help="decode at least this fast"),
    max_ttft: Optional[str] = typer.Option(None, "--max-ttft", help="time to first token at most, e.g. 2s"),
    max_ppl_increase: Optional[str] = typer.Option(None, "--max-ppl-increase", help="perplexity loss at most, e.g. 0.2"),
    max_kld: Optional[str] = typer.Option(None, "--max-kld", help="mean KL divergence at most, as fitplan quality "
                                          "measured it on MODEL, e.g. 0.05"),
    probe_quality: bool = typer.Option(False, "--probe-quality", help="measure the GGUF formats that fit on MODEL's "
                                       "own file (fitplan quality, cached) before choosing"),
    top: Optional[str] = typer.Option(None, "--top", help="list at most K alternatives (default: all in --json, 8 in the table)"),
    flash_attn: Optional[bool] = typer.Option(None, "--flash-attn/--no-flash-attn",
                                              help="llama.cpp flash attention (default on)"),
    swa_full: Optional[str] = typer.Option(None, "--swa-full",
                                           help="llama.cpp: sliding-window layers cache the whole context (on, "
                                                "llama-cpp-python's default) or the window only (off, llama-server's)"),
    op_offload: Optional[str] = typer.Option(None, "--op-offload",
                                             help="llama.cpp: CPU layers' prompt batches run on the GPU, weights sent over "
                                                  "the host link (on, its default) or on the host (off: --no-op-offload)"),
    plot: Optional[str] = typer.Option(None, "--plot", help="draw the Pareto front and memory to FILE.png or .svg (matplotlib)"),
    draft: Optional[str] = typer.Option(None, "--draft",
                                        help="speculative decoding: a smaller model of the same tokenizer, or prompt-lookup"),
    acceptance: Optional[str] = typer.Option(None, "--acceptance", help="the draft's measured acceptance rate, e.g. 0.7"),
    draft_tokens: Optional[str] = typer.Option(None, "--draft-tokens", help="tokens the draft proposes per step (default 4)"),
    prune: Optional[str] = typer.Option(None, "--prune", help="2:4 or unstructured:RATIO: see what pruning changes here"),
    disk_layers: Optional[str] = typer.Option(None, "--disk-layers",
                                              help="transformers: keep the last N blocks on disk (accelerate offload)"),
    force: bool = typer.Option(False, "--force", help="let -o and --plot replace an existing file"),
    compare: Optional[str] = typer.Option(None, "--compare", help="profiles A,B,C (names, Nx<name> or .toml "
                                          "paths): the best plan on each, side by side"),
) -> None:
    """Recommend how to run MODEL on this machine or a named profile, with exact memory per device."""
    from fitplan.advisor.cli.report import render
    from fitplan.advisor.models.resolve import resolve_model
    from fitplan.advisor.planner.document import advice_document
    from fitplan.advisor.planner.solver import Request, advise
    from fitplan.plan_spec import MAX_BATCH, MAX_CONTEXT, MAX_DRAFT_TOKENS, MAX_THREADS
    from fitplan.strategies.registry import normalize_runtime, weight_format
    from fitplan.units import parse_count, parse_duration, parse_rate, parse_reserve, parse_size

    for option, value in (("--runtime", runtime), ("--weights", weights), ("--kv-cache", kv_cache),
                          ("--min-tokens-per-s", min_tokens_per_s), ("--max-ttft", max_ttft), ("--draft", draft),
                          ("--prune", prune), ("--plot", plot), ("-o", output), ("--hardware", hardware)):
        _not_empty(value, option)
    runtime = normalize_runtime(runtime) if runtime else None
    request = Request(
        context=parse_count(context, source="--context", maximum=MAX_CONTEXT) if context is not None else None,
        batch=parse_count(batch, source="--batch", maximum=MAX_BATCH),
        threads=parse_count(threads, source="--threads", maximum=MAX_THREADS) if threads is not None else None,
        runtime=runtime,
        weights=weight_format(weights, runtime=runtime).name if weights else None,
        kv_cache=kv_cache,
        max_vram=parse_size(max_vram, source="--max-vram") if max_vram is not None else None,
        max_ram=parse_size(max_ram, source="--max-ram") if max_ram is not None else None,
        reserve=parse_reserve(reserve, source="--reserve") if reserve is not None else None,
        objective=objective, flash_attn=flash_attn, draft=draft,
        swa_full=_parse_switch(swa_full, "--swa-full") if swa_full is not None else None,
        op_offload=_parse_switch(op_offload, "--op-offload") if op_offload is not None else None,
        acceptance=_parse_fraction(acceptance) if acceptance is not None else None,
        draft_tokens=(parse_count(draft_tokens, source="--draft-tokens", maximum=MAX_DRAFT_TOKENS)
                      if draft_tokens is not None else None),
        min_tokens_per_s=parse_rate(min_tokens_per_s, source="--min-tokens-per-s") if min_tokens_per_s else None,
        max_ttft_s=parse_duration(max_ttft, source="--max-ttft") if max_ttft else None,
        max_ppl_increase=_parse_loss(max_ppl_increase) if max_ppl_increase is not None else None,
        max_kld=_parse_loss(max_kld, "--max-kld") if max_kld is not None else None,
        prune=prune,
        disk_layers=parse_count(disk_layers, source="--disk-layers") if disk_layers is not None else None,
    )
    ram_bytes = parse_size(ram, source="--ram") if ram is not None else None
    if prune is not None:
        from fitplan.strategies.pruning import parse_prune

        parse_prune(prune)  # a bad value fails before any model is read
    if plot:
        from fitplan.advisor.cli.plot import check_plot_target

        check_plot_target(plot, force=force)
    if compare is not None:
        if output or probe or probe_quality or hardware != "auto":
            raise BadValueError("--compare weighs the profiles it names: leave out --hardware, -o, --probe and "
                                "--probe-quality")
        _compare(model, compare, request, ram_bytes, as_json=as_json, plot=plot, force=force)
        return
    if output and os.path.lexists(output) and not force:
        raise BadValueError(f"{output} exists (-o); fitplan never overwrites a file: pick another name, or pass --force")
    spec = resolve_model(model)
    hw = _hardware(hardware, ram_bytes, model_path=model)
    if probe and draft and request.acceptance is None:
        request = _measured_acceptance(spec, draft, request)
    request = _with_measured_quality(spec, request, probe_quality)
    probes, calibration = _speed_context(hw, spec, probe=False)
    advice = advise(spec, hw, request, probes=probes, calibration=calibration)
    if probe_quality:  # measure the formats that fit on the model's own file, then answer again
        request = _probe_quality(spec, advice, request, as_json)
        advice = advise(spec, hw, request, probes=probes, calibration=calibration)
    if probe:  # measure, calibrate the runtime the first answer chose, then answer again
        probes, calibration = _speed_context(hw, spec, probe=True, chosen=advice.chosen)
        advice = advise(spec, hw, request, probes=probes, calibration=calibration)
    top_k = parse_count(top, source="--top", minimum=0, maximum=100_000) if top is not None else None
    document = advice_document(spec, hw, advice, top=top_k, calibration=calibration)
    if advice.fits:
        from fitplan.advisor.planner.capacity import capacity

        document["capacity"] = capacity(spec, hw, request, advice.chosen, probes=probes, calibration=calibration)
    if prune is not None:
        document["plan"]["pruning"] = _pruning_effects(prune, advice.chosen, hw)
    if request.weights is None:
        from fitplan.advisor.planner.survey import smaller_sibling

        document["smaller_sibling"] = smaller_sibling(spec, hw, advice, request)
    if output:
        from fitplan.advisor.plans.plan_file import plan_from_advice

        _write_plan_file(output, plan_from_advice(document).model_dump_json(indent=2) + "\n", force)
    if plot:
        from fitplan.advisor.cli.plot import plot as draw

        draw(document, plot, force=force)
    if as_json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        render(document, _console(), top=8 if top_k is None else top_k)


def _compare(model: str, names: str, request: Request, ram_bytes: int | None, *, as_json: bool, plot: str | None,
             force: bool) -> None:
    """`advise MODEL --compare A,B,C`: the full advice on each profile; a table, JSON or a chart."""
    from fitplan.advisor.cli.report import render_compare
    from fitplan.advisor.models.resolve import resolve_model
    from fitplan.advisor.planner.document import advice_document
    from fitplan.advisor.planner.machines import compare, summary

    profiles = [n.strip() for n in names.split(",")]
    if len(profiles) < 2 or not all(profiles) or len(set(profiles)) != len(profiles):
        raise BadValueError(f"bad --compare {names!r}: name two or more different profiles, e.g. "
                            "rtx-5090-32gb,2xrtx-3090-24gb")
    machines = [_hardware(n, ram_bytes, model_path=model) for n in profiles]  # a bad name fails before any work
    spec = resolve_model(model)
    entries = []
    for hw, advice in compare(spec, machines, request):
        document = advice_document(spec, hw, advice)
        document["summary"] = summary(spec, hw, advice, request).as_dict()
        # "hardware" names the profile, as in hardware --for; the machine's figures move to "machine"
        entries.append({**document, "hardware": hw.name, "machine": document["hardware"]})
    document = {"model": spec.name, "compare": entries}
    if plot:
        from fitplan.advisor.cli.plot import plot_compare

        plot_compare(document, plot, force=force)
    if as_json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        render_compare(document, _console())


def _with_measured_quality(spec: ModelSpec, request: Request, probe_quality: bool) -> Request:
    """The request with what fitplan quality measured for a local GGUF (its cache), if anything."""
    from dataclasses import replace

    if spec.source != "gguf":
        if probe_quality:
            raise BadValueError(f"--probe-quality measures a local GGUF file; {spec.name} is a {spec.source} model "
                                "(convert it, or pass the .gguf)")
        return request
    from fitplan.advisor.planner.quality import stored_quality

    measured = stored_quality(spec.location)
    return replace(request, measured=measured) if measured else request


def _probe_quality(spec: ModelSpec, advice: Advice, request: Request, as_json: bool) -> Request:
    """Run fitplan quality over the GGUF formats the first answer found to fit (the file's own aside)."""
    from dataclasses import replace

    from fitplan.advisor.cli.report import quality_progress
    from fitplan.advisor.planner.quality import measure, stored_quality

    fitting = [advice.chosen, *advice.alternatives] if advice.fits else []
    formats = list(dict.fromkeys(c.fmt.name for c in fitting if c.fmt.family == "gguf" and c.fmt.name != spec.native_dtype))
    if formats:
        with quality_progress(enabled=not as_json and sys.stderr.isatty()) as progress:
            measure(spec.location, formats, progress=progress)
    measured = stored_quality(spec.location)
    return replace(request, measured=measured) if measured else request


def _pruning_effects(prune: str, chosen: Candidate, hw: HardwareSpec) -> dict[str, Any]:
    from fitplan.strategies.pruning import effects, parse_prune, sparse_kernel_unmet

    pattern, ratio = parse_prune(prune)
    setup = chosen.setup
    unmet = None if setup.sparse_kernels else sparse_kernel_unmet(
        pattern, setup.weights, hw, setup.gpu_layers == chosen.layers and setup.gpus > 0)
    return effects(pattern, ratio, unmet)


@app.command("profile")
def profile_command(
    name: Optional[str] = typer.Argument(None, help="a profile name, Nx<name> or .toml path (default: this machine)"),
    list_all: bool = typer.Option(False, "--list", help="list the named profiles"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    probe: bool = typer.Option(False, "--probe", help="run the micro-benchmarks on this machine (cached)"),
    refresh: bool = typer.Option(False, "--refresh", help="with --probe: ignore the cache and measure again"),
) -> None:
    """Print a hardware profile: this machine (detected) by default."""
    from fitplan.profiles.named import profile_names

    if list_all:
        sys.stdout.write("\n".join(profile_names()) + "\n")
        return
    _not_empty(name, "the profile name")
    hw = _hardware(name or "auto", None)
    probes = None
    if probe:
        if not hw.detected:
            raise BadValueError("--probe measures this machine: leave out the profile name")
        from fitplan.profiles.probes import probes_or_cached

        probes = probes_or_cached(hw, refresh=refresh, progress=not as_json)
    if as_json:
        document = json.loads(hw.model_dump_json())
        if probes is not None:
            document["probes"] = json.loads(probes.model_dump_json())
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    _print_profile(hw)
    if probes is not None:
        _print_probes(probes)


@app.command("models")
def models_command(
    hardware: Optional[str] = typer.Option(None, "--hardware",
                                           help="rank every catalog model on this machine (auto) or a profile"),
    context: Optional[str] = typer.Option(None, "--context", help="tokens per sequence (default: min(model max, 8192))"),
    min_tokens_per_s: Optional[str] = typer.Option(None, "--min-tokens-per-s", help="decode at least this fast"),
    family: Optional[str] = typer.Option(None, "--family", help="only this family, e.g. qwen3"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document"),
) -> None:
    """List the built-in catalog; with --hardware, what each model would get there ("what can I run?")."""
    from fitplan.advisor.models.catalog import all_entries
    from fitplan.plan_spec import MAX_CONTEXT
    from fitplan.units import parse_count, parse_rate

    for option, value in (("--hardware", hardware), ("--family", family), ("--min-tokens-per-s", min_tokens_per_s)):
        _not_empty(value, option)
    families = {e.get("family", "").lower() for e in all_entries()}
    if family is not None and family.lower() not in families:
        raise BadValueError(f"unknown family {family!r} (--family); known: {', '.join(sorted(families))}")
    if hardware is None:
        if context is not None or min_tokens_per_s is not None or as_json:
            raise BadValueError("--context, --min-tokens-per-s and --json rank models on a machine: pass --hardware")
        names = [e["name"] for e in all_entries() if family is None or e.get("family", "").lower() == family.lower()]
        sys.stdout.write("\n".join(names) + "\n")
        return
    from fitplan.advisor.cli.report import render_survey
    from fitplan.advisor.planner.survey import survey

    ctx = parse_count(context, source="--context", maximum=MAX_CONTEXT) if context is not None else None
    rate = parse_rate(min_tokens_per_s, source="--min-tokens-per-s") if min_tokens_per_s else None
    hw = _hardware(hardware, None)
    rows = survey(hw, context=ctx, min_tokens_per_s=rate, family=family)
    if as_json:
        document = {"hardware": hw.name, "runtime": "llama.cpp", "context": ctx, "min_tokens_per_s": rate,
                    "models": [r.as_dict() for r in rows]}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        render_survey(hw.name, rows, _console())


@app.command("hardware")
def hardware_command(
    model: str = typer.Option(..., "--for", help="the model to run: a catalog name, .gguf file, folder or hub id"),
    context: Optional[str] = typer.Option(None, "--context", help="tokens per sequence (default: min(model max, 8192))"),
    min_tokens_per_s: Optional[str] = typer.Option(None, "--min-tokens-per-s", help="decode at least this fast"),
    max_ppl_increase: Optional[str] = typer.Option(None, "--max-ppl-increase",
                                                   help="perplexity loss at most (default: about Q4_K_M's on the model)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document"),
) -> None:
    """Which hardware should I get? Every named profile ranked for MODEL: the smallest that meets the
    requirement first, and the cheapest where profiles give a price."""
    from fitplan.advisor.cli.report import render_hardware
    from fitplan.advisor.models.resolve import resolve_model
    from fitplan.advisor.planner.machines import cheapest, rank_profiles
    from fitplan.plan_spec import MAX_CONTEXT
    from fitplan.profiles.named import load_profile, profile_names
    from fitplan.units import parse_count, parse_rate

    _not_empty(min_tokens_per_s, "--min-tokens-per-s")
    ctx = parse_count(context, source="--context", maximum=MAX_CONTEXT) if context is not None else None
    rate = parse_rate(min_tokens_per_s, source="--min-tokens-per-s") if min_tokens_per_s else None
    bound = _parse_loss(max_ppl_increase) if max_ppl_increase is not None else None
    spec = resolve_model(model)
    rows = rank_profiles(spec, [load_profile(n) for n in profile_names()], context=ctx, min_tokens_per_s=rate,
                         max_ppl_increase=bound)
    best = cheapest(rows)
    document = {"model": spec.name, "runtime": "llama.cpp",
                "requirement": {"context": ctx, "min_tokens_per_s": rate, "max_ppl_increase": bound},
                "smallest": next((r.hardware for r in rows if r.meets), None),
                "cheapest": {"hardware": best.hardware, "price_usd": best.price_usd, "price_date": best.price_date}
                if best else None,
                "profiles": [r.as_dict() for r in rows]}
    if as_json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        render_hardware(document, _console())


@app.command("run")
def run_command(
    source: str = typer.Argument(..., help="a plan file (advise -o) or a MODEL to plan for this machine"),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="the prompt text"),
    prompt_file: Optional[str] = typer.Option(None, "--prompt-file", help="read the prompt from this file"),
    max_tokens: str = typer.Option("128", "--max-tokens", help="generate at most N tokens"),
    stop: Optional[list[str]] = typer.Option(None, "--stop", help="stop at this text (repeatable)"),
    serve: bool = typer.Option(False, "--serve", help="start the runtime's OpenAI-compatible server instead"),
    port: str = typer.Option("8000", "--port", help="with --serve: the port"),
    host: str = typer.Option("127.0.0.1", "--host", help="with --serve: the address (loopback by default)"),
    server: Optional[str] = typer.Option(None, "--server",
                                         help="with --serve: vllm or tensorrt-llm instead of the plan's runtime"),
    runtime: Optional[str] = typer.Option(None, "--runtime", help=f"for a MODEL: pin the runtime ({RUNTIMES})"),
    weights: Optional[str] = typer.Option(None, "--weights", help="for a MODEL: pin the weight format"),
    context: Optional[str] = typer.Option(None, "--context", help="for a MODEL: tokens of context"),
    threads: Optional[str] = typer.Option(None, "--threads", help="for a MODEL: CPU threads"),
) -> None:
    """Load as planned and stream the generated text as it comes (Ctrl-C stops cleanly)."""
    from fitplan.advisor.plans.handle import load, resolve_plan
    from fitplan.plan_spec import MAX_CONTEXT, MAX_THREADS
    from fitplan.strategies.registry import normalize_runtime
    from fitplan.units import parse_count

    for option, value in (("--runtime", runtime), ("--weights", weights), ("--context", context),
                          ("--threads", threads), ("--server", server)):
        _not_empty(value, option)
    tokens = parse_count(max_tokens, source="--max-tokens", maximum=MAX_CONTEXT)
    pins = {k: v for k, v in (
        ("runtime", normalize_runtime(runtime) if runtime else None), ("weights", weights),
        ("context", parse_count(context, source="--context", maximum=MAX_CONTEXT) if context else None),
        ("threads", parse_count(threads, source="--threads", maximum=MAX_THREADS) if threads else None)) if v is not None}
    if pins and source.endswith(".json"):
        raise BadValueError(f"--{next(iter(pins))} pins a MODEL's plan; {source} is a plan file already: edit it, or "
                            "make another with advise -o")
    if serve:
        _serve(resolve_plan(source, **pins), parse_count(port, source="--port", minimum=1, maximum=65535), host, server)
        return
    text = _prompt_text(prompt, prompt_file)
    handle = load(source, **pins)
    try:
        for piece in handle.stream(text, max_tokens=tokens, stop=stop or ()):
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        sys.stderr.write("fitplan: stopped\n")
        handle.close()
        raise typer.Exit(130) from None
    handle.close()
    m = handle.metering
    sys.stdout.write("\n")
    sys.stdout.flush()
    sys.stderr.write(f"[{handle.plan.plan.runtime} {handle.plan.plan.weights}: {m['prompt_tokens']} prompt tokens, "
                     f"{m['generated_tokens']} generated in {m['seconds']:.2f} s ({m['generated_tokens_per_s']:.1f} tok/s)]\n")


def _prompt_text(prompt: str | None, prompt_file: str | None) -> str:
    if prompt is not None and prompt_file is not None:
        raise BadValueError("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        from fitplan.user_files import read_text

        return read_text(prompt_file, limit=2**24, what="--prompt-file")
    if prompt is None:
        raise BadValueError("no prompt: pass --prompt TEXT or --prompt-file FILE")
    return prompt


def _serve(plan: PlanFile, port: int, host: str, server: str | None = None) -> None:
    """Replace this process with the runtime's own server (in the foreground until it exits or Ctrl-C)."""
    from fitplan.advisor.plans.export import serve
    from fitplan.advisor.plans.plan_file import check_fingerprint

    check_fingerprint(plan)
    command = serve(plan, port=port, host=host, server=server)
    args, model = command.args, command.model
    sys.stderr.write(f"fitplan: serving {plan.model.name} on http://{host}:{port}/v1: request model \"{model}\"\n")
    sys.stderr.flush()
    sys.stdout.flush()
    # the server takes this process's place: Ctrl-C and a terminating supervisor reach it directly,
    # and no server is left behind when fitplan is stopped
    try:
        os.execvp(args[0], args)
    except OSError as exc:
        from fitplan.errors import RuntimeMissingError

        raise RuntimeMissingError(f"cannot start {args[0]} (--serve): {exc.strerror or exc}") from None


@app.command("export")
def export_command(
    plan_path: str = typer.Argument(..., help="a plan file written by advise -o"),
    to: str = typer.Option("python", "--to", help=EXPORTS),
    max_tokens: str = typer.Option("128", "--max-tokens", help="tokens the exported code generates"),
) -> None:
    """Print the plan as Python code or a command line that runs it."""
    from fitplan.advisor.plans.export import export
    from fitplan.advisor.plans.plan_file import load_plan
    from fitplan.plan_spec import MAX_CONTEXT
    from fitplan.units import parse_count

    text = export(load_plan(plan_path), to, max_tokens=parse_count(max_tokens, source="--max-tokens", maximum=MAX_CONTEXT))
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command("check")
def check_command(
    files: Optional[list[str]] = typer.Argument(None, help="budget files to check (pre-commit passes the changed "
                                                             "ones; a pyproject.toml without budgets is skipped)"),
    config: Optional[str] = typer.Option(None, "--config", help="budgets file (default: pyproject.toml here, else "
                                                                  "fitplan.toml); relative paths in it are read "
                                                                  "from its folder"),
    fmt: str = typer.Option("text", "--format", help="text | json | junit | github | markdown"),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="write the report here instead of stdout"),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="an earlier --format json report to compare with"),
    tolerance: str = typer.Option("5", "--baseline-tolerance", help="percent a prediction may worsen (default 5)"),
    fail_on_regression: bool = typer.Option(True, "--fail-on-regression/--no-fail-on-regression",
                                            help="a prediction worse than the baseline beyond the tolerance "
                                                 "fails (default), or is only reported"),
    profiles: Optional[str] = typer.Option(None, "--profiles", help="A,B: check every entry on these profiles "
                                                                      "instead of the ones it names"),
    measure: bool = typer.Option(False, "--measure",
                                 help="also run entries whose profile is this machine (or auto) "
                                      "and gate on the measured figures"),
    force: bool = typer.Option(False, "--force", help="with -o: replace the file even if fitplan did not write it"),
    reserve: Optional[str] = typer.Option(None, "--reserve", help=RESERVE_HELP + "; a budget's own reserve key wins"),
) -> None:
    """Predict every budget entry on every target profile; exit 1 when a budget breaks, 2 on a bad config."""
    from fitplan.advisor.budgets.budget_file import budget_files, load_budgets
    from fitplan.advisor.budgets.check import FORMATS, check, load_baseline, render, report_file_text, report_is_ours
    from fitplan.owned_files import write_owned
    from fitplan.units import parse_reserve

    if fmt not in FORMATS:  # before any prediction is made
        raise BadValueError(f"unknown --format {fmt!r}; known: {', '.join(FORMATS)}")
    if reserve is not None:
        parse_reserve(reserve, source="--reserve")
    share = _parse_percent(tolerance)
    targets = _profile_list(profiles) if profiles is not None else None
    paths = budget_files(files or [], config)
    one_report = bool(output) or fmt in ("json", "junit")
    if len(paths) != 1 and one_report:
        raise BadValueError(f"{len(paths)} budget files with budgets among those named: -o, --format json and --format "
                            "junit write one report of one file; check them one at a time")
    saved = load_baseline(baseline) if baseline else None
    reports, ok, compared = [], True, False
    for path in paths:
        rows = check(load_budgets(path), baseline=saved, tolerance=share, measured=measure, reserve=reserve,
                     profiles=targets, regression_fails=fail_on_regression)
        reports.append(render(rows, fmt, os.path.relpath(path), share))
        ok = ok and all(r.ok for r in rows)
        compared = compared or any(r.baseline is not None for r in rows)
    if saved is not None and not compared:  # a renamed budget or --profiles: the regression gate would be off
        sys.stderr.write(f"fitplan check: warning: no budget here matches one in --baseline {baseline} (keys are the "
                         "budget's name, else its model; the profile; the limit), so nothing is compared with it\n")
    if output:
        write_owned(output, report_file_text(reports[0], fmt), ours=report_is_ours, option="-o", force=force)
    else:
        sys.stdout.write("\n".join(reports) if reports else "fitplan check: no budgets in the files given\n")
    if not ok:
        raise typer.Exit(1)


def _profile_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise BadValueError(f"bad --profiles {text!r}: name one or more different profiles, e.g. "
                            "rtx-3060-12gb,rtx-4090-24gb")
    return names


def _parse_percent(text: str) -> float:
    message = f"bad --baseline-tolerance {text!r}: a percentage such as 5 or 2.5%"
    return _number(text.strip().removesuffix("%"), 1000, message, inclusive=True) / 100


@app.command("schema")
def schema_command(
    what: str = typer.Argument(..., help="plan: the plan file's JSON Schema"),
) -> None:
    """Print a published JSON Schema (plan files)."""
    if what != "plan":
        raise BadValueError(f"unknown schema {what!r}; known: plan")
    from fitplan.advisor.plans.plan_file import plan_json_schema

    sys.stdout.write(json.dumps(plan_json_schema(), indent=2) + "\n")


@app.command("strategies")
def strategies_command(
    hardware: Optional[str] = typer.Option(None, "--hardware", help="say which options run on this profile"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List every strategy's options (built-in and from plugins), what each needs and how it runs."""
    from fitplan.strategies.registry import options, strategies

    _not_empty(hardware, "--hardware")
    hw = _hardware(hardware, None) if hardware else None
    rows = [_option_row(o, hw) for s in strategies().values() for o in options(s.name)]
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    from rich.table import Table

    from fitplan.user_files import shown

    table = Table(title=f"strategies{f' on {shown(hw.name)}' if hw else ''}", title_justify="left")
    for column in ("strategy", "option", "needs", *(["here"] if hw else [])):
        table.add_column(column)
    for r in rows:
        here = ["yes" if r["runs_on"] else f"no: {r['unmet']}"] if hw else []
        table.add_row(r["strategy"], r["option"], r["needs"], *here)
    _console().print(table)
    sys.stdout.write("how each option runs, its effects and sources: fitplan strategies --json\n")


def _option_row(option: Option, hw: HardwareSpec | None) -> dict[str, Any]:
    req = option.requirement
    needs = [f"devices {'/'.join(req.devices)}"]
    if req.gpu_vendors:
        needs.append(f"{'/'.join(req.gpu_vendors)} GPU")
    if req.min_compute_capability is not None:
        needs.append(f"compute capability >= {req.min_compute_capability:.1f}")
    if req.runtimes:
        needs.append(f"runtime {'/'.join(req.runtimes)}")
    if req.packages:
        needs.append(f"packages {', '.join(req.packages)}")
    row: dict[str, Any] = {"strategy": option.strategy, "option": option.name, "needs": "; ".join(needs),
                           "execute": option.execute, "effects": option.effects, "source": req.source}
    if hw is not None:
        unmet = [req.unmet(hw, d) for d in req.devices]
        row["runs_on"] = [d for d, u in zip(req.devices, unmet) if u is None]
        row["unmet"] = "; ".join(dict.fromkeys(u for u in unmet if u)) if not row["runs_on"] else None
        if hw.detected:
            row["missing_packages"] = req.missing_packages()
    return row


@app.command("quality")
def quality_command(
    model: str = typer.Argument(..., help="a local GGUF file"),
    formats: Optional[str] = typer.Option(None, "--formats", help="comma-separated GGUF file types (default: Q8_0, "
                                          "Q6_K, Q5_K_M, Q4_K_M, Q3_K_M, Q2_K and the file's own type)"),
    reference: Optional[str] = typer.Option(None, "--reference", help="a file type written from MODEL, or another GGUF "
                                            "of the same model (e.g. its F16) to compare against (default: MODEL)"),
    text: Optional[str] = typer.Option(None, "--text", help="a UTF-8 text file to score (default: a built-in text)"),
    tokens: str = typer.Option("2048", "--tokens", help="tokens scored"),
    threads: Optional[str] = typer.Option(None, "--threads", help="CPU threads (default: physical cores)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document"),
    no_cache: bool = typer.Option(False, "--no-cache", help="measure again even where a cached figure exists"),
) -> None:
    """Measure what each GGUF format costs this model: KL divergence, top-1 agreement and perplexity against
    the reference, file size and decode speed here, all with llama.cpp itself."""
    from fitplan.advisor.cli.report import quality_progress, render_quality
    from fitplan.advisor.planner.quality import measure
    from fitplan.units import parse_count

    for option, value in (("--formats", formats), ("--reference", reference), ("--text", text), ("--threads", threads)):
        _not_empty(value, option)
    count = parse_count(tokens, source="--tokens", maximum=65536)
    n_threads = parse_count(threads, source="--threads", maximum=4096) if threads else None
    wanted = [f for f in formats.split(",") if f.strip()] if formats else None
    with quality_progress(enabled=not as_json and sys.stderr.isatty()) as progress:
        report = measure(model, wanted, reference=reference, text_file=text, tokens=count, threads=n_threads,
                         progress=progress, use_cache=not no_cache)
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        render_quality(report, _console())
    if report.interrupted:
        raise typer.Exit(130)


@app.command("verify")
def verify_command(
    model: str = typer.Argument(..., help="a .gguf file, a folder with config.json + safetensors, or a plan .json"),
    prompt_tokens: str = typer.Option("128", "--prompt-tokens", help="prompt length of each run"),
    gen_tokens: str = typer.Option("32", "--gen-tokens", help="tokens generated in each run"),
    repeat: str = typer.Option("3", "--repeat", help="runs; medians are reported with their spread"),
    runtime: Optional[str] = typer.Option(None, "--runtime", help=f"the runtime to measure: {RUNTIMES}"),
    weights: Optional[str] = typer.Option(None, "--weights",
                                          help="default: the file's own format (llama.cpp), fp32 (transformers)"),
    context: Optional[str] = typer.Option(None, "--context", help="context to allocate (default 2048)"),
    threads: Optional[str] = typer.Option(None, "--threads", help="CPU threads (default: physical cores)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document"),
) -> None:
    """Run the plan on the real runtime here and print predicted against measured."""
    from fitplan.advisor.plans.verify_command import verify_plan
    from fitplan.plan_spec import MAX_CONTEXT, MAX_THREADS
    from fitplan.units import parse_count

    document = verify_plan(
        model, prompt_tokens=parse_count(prompt_tokens, source="--prompt-tokens", maximum=MAX_CONTEXT),
        gen_tokens=parse_count(gen_tokens, source="--gen-tokens", minimum=2, maximum=MAX_CONTEXT),
        repeat=parse_count(repeat, source="--repeat", maximum=1000), runtime=runtime, weights=weights,
        context=parse_count(context, source="--context", maximum=MAX_CONTEXT) if context is not None else None,
        threads=parse_count(threads, source="--threads", maximum=MAX_THREADS) if threads is not None else None,
    )
    if as_json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        from fitplan.advisor.plans.verify_command import render_verify

        render_verify(document, _console())


def _measured_acceptance(spec: ModelSpec, draft: str, request: Request) -> Request:
    """--probe with --draft: measure the draft's acceptance on this pair (local GGUF files) instead of
    assuming it; anything else keeps the stated default, and says why on stderr."""
    import dataclasses

    if spec.source != "gguf" or not draft.lower().endswith(".gguf"):
        sys.stderr.write("acceptance probe skipped: it runs two local GGUF files (target and draft)\n")
        return request
    from fitplan.advisor.planner.acceptance import measure_acceptance

    try:
        found = measure_acceptance(spec.location, draft)
    except FitplanError as exc:
        sys.stderr.write(f"{exc}; the stated default acceptance stays\n")
        return request
    source = f"measured (acceptance probe, {found['positions']} greedy positions)"
    return dataclasses.replace(request, acceptance=found["acceptance"], acceptance_source=source)


def _not_empty(value: str | None, option: str) -> None:
    """An option given as an empty string is a mistake (an unset shell variable), not "use the default"."""
    if value is not None and not value.strip():
        raise BadValueError(f"{option} is empty: give a value or leave the option out")


def _number(text: str, below: float, message: str, *, inclusive: bool = False) -> float:
    """A number in [0, below) ([0, below] when inclusive); otherwise `message` as the error."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0 <= value <= below if inclusive else 0 <= value < below):
        raise BadValueError(message)
    return value


def _parse_switch(text: str, option: str) -> bool:
    value = {"on": True, "off": False}.get(text.strip().lower())
    if value is None:
        raise BadValueError(f"bad {option} {text!r}: expected on or off")
    return value


def _parse_fraction(text: str) -> float:
    return _number(text, 1, f"bad --acceptance {text!r}: expected a rate in [0, 1), e.g. 0.7")


def _parse_loss(text: str, option: str = "--max-ppl-increase") -> float:
    example = "a mean KL divergence such as 0.05" if option == "--max-kld" else "a perplexity increase such as 0.2"
    return _number(text, 1e6, f"bad {option} {text!r}: expected {example}")


def _speed_context(hw: HardwareSpec, spec: ModelSpec, *, probe: bool, chosen: Candidate | None = None
                   ) -> tuple[MachineProbes | None, Calibration | None]:
    """(probes, calibration) of this machine where it is the target: cached, or measured with --probe."""
    if not hw.detected and probe:
        raise BadValueError("--probe measures this machine: use it with --hardware auto")
    if not probe:
        from fitplan.advisor.planner.estimate import machine_context

        return machine_context(hw)
    from fitplan.advisor.planner.calibration import load_calibration
    from fitplan.profiles.probes import fingerprint, probes_or_cached

    files = [spec.location] if spec.source == "gguf" else []
    probes = probes_or_cached(hw, model_files=files, progress=True)
    from fitplan.advisor.plans.verify_command import calibrate_runtime

    assert chosen is not None, "--probe calibrates the runtime of the chosen plan"
    calibrate_runtime(spec, chosen, hw, probes)
    return probes, load_calibration(fingerprint(hw))


def _hardware(name: str, ram_bytes: int | None, model_path: str | None = None) -> Any:
    from fitplan.profiles.named import hardware

    hw = hardware(name, beside=model_path)
    if ram_bytes is not None:
        hw = hw.model_copy(update={"ram_bytes": ram_bytes, "ram_available_bytes": None})
    return hw


def _print_profile(hw: HardwareSpec) -> None:
    from fitplan.units import format_bytes

    lines = [f"{hw.name}: {hw.description}".rstrip(": ")]
    for i, gpu in enumerate(hw.gpus):
        free = f", {format_bytes(gpu.free_memory_bytes)} free" if gpu.free_memory_bytes is not None else ""
        bw = f", {gpu.memory_bandwidth_GB_per_s:g} GB/s" if gpu.memory_bandwidth_GB_per_s else ""
        lines.append(f"  gpu{i}: {gpu.name}, {format_bytes(gpu.memory_bytes)}{free}{bw}, "
                     f"compute capability {gpu.compute_capability or '-'}")
    if not hw.gpus:
        lines.append("  no GPU")
    lines.append(f"  cpu: {hw.cpu.name}, {hw.cpu.cores} cores / {hw.cpu.threads} threads, "
                 f"{' '.join(hw.cpu.flags) or 'no flags listed'}")
    avail = f", {format_bytes(hw.ram_available_bytes)} available" if hw.ram_available_bytes is not None else ""
    lines.append(f"  ram: {format_bytes(hw.ram_bytes)}{avail}")
    if hw.disk_free_bytes is not None:
        lines.append(f"  disk: {format_bytes(hw.disk_free_bytes)} free")
    for source in hw.sources:
        lines.append(f"  source: {source}")
    sys.stdout.write("\n".join(lines) + "\n")


def _print_probes(probes: MachineProbes) -> None:
    rows = []
    for name in ("host_read_GB_per_s_1thread", "host_read_GB_per_s_all", "host_copy_GB_per_s_1thread",
                 "host_copy_GB_per_s_all"):
        value = getattr(probes, name, None)
        if value is not None:
            rows.append(f"  {name}: {value.value:.1f} {value.unit}")
    for name, value in sorted(probes.matmul_GFLOP_per_s.items()):
        rows.append(f"  matmul {name}: {value.value:.1f} {value.unit}")
    for path, value in probes.disk_read_GB_per_s.items():
        rows.append(f"  disk read {path}: {value.value:.2f} {value.unit}")
    for i, gpu in enumerate(probes.gpus):
        for name, value in gpu.items():
            rows.append(f"  gpu{i} {name}: {value.value:.1f} {value.unit}")
    for name, why in probes.errors.items():
        rows.append(f"  {name}: not measured ({why})")
    sys.stdout.write(f"probes (measured, {probes.total_seconds():.1f} s):\n" + "\n".join(rows) + "\n")


def _write_plan_file(path: str, text: str, force: bool) -> None:
    """Create `path` without ever replacing an existing file (O_EXCL); --force replaces a regular file."""
    if force:
        from fitplan.owned_files import write_owned

        write_owned(path, text, ours=lambda _: True, option="-o", force=True)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise BadValueError(f"{path} exists (-o); fitplan never overwrites a file: pick another name") from None
    except OSError as exc:
        raise BadValueError(f"cannot write {path} (-o): {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _run(command: Any, prog: str, args: list[str] | None) -> int:
    """Run a click command, turning every user error into one line on stderr and exit code 2.

    Usage errors are recognised by click's `format_message` rather than by class: typer >= 0.2x
    ships its own copy of click, whose exception classes are not the `click` package's.
    """
    try:
        given = sys.argv[1:] if args is None else args
        if not given or "--help" in given or "-h" in given:
            _fill_help(command)
        code = command.main(args=args, prog_name=prog, standalone_mode=False)
        return code if isinstance(code, int) else 0  # typer.Exit(n) comes back as n
    except FitplanError as exc:
        message = str(exc)
    except typer.Abort:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if not hasattr(exc, "format_message"):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.stdout.write(exc.ctx.get_help() + "\n")  # type: ignore[attr-defined]
            return 0
        message = exc.format_message()
    from fitplan.user_files import printable

    sys.stderr.write(f"{prog}: error: {printable(' '.join(message.split()))}\n")
    return 2


def _fill_help(command: Any) -> None:
    """The runtimes and export forms in the help texts, as this installation registers them (a plugin's
    runtime too); asked for only when help is shown, so a broken plugin is one error line like any other."""
    from fitplan.strategies.registry import export_targets, runtime_names

    names = {RUNTIMES: ", ".join(runtime_names()), EXPORTS: " | ".join(export_targets())}
    for sub in [command, *getattr(command, "commands", {}).values()]:
        for param in sub.params:
            for placeholder, text in names.items():
                if getattr(param, "help", None) and placeholder in param.help:
                    param.help = param.help.replace(placeholder, text)


def main(args: list[str] | None = None) -> int:
    """Entry point of `fitplan`."""
    return _exit(_run(typer.main.get_command(app), "fitplan", args))


def advise_main(args: list[str] | None = None) -> int:
    """Entry point of `advise` (the same as `fitplan advise`)."""
    group = typer.main.get_command(app)
    return _exit(_run(group.commands["advise"], "advise", args))  # type: ignore[attr-defined]


def _exit(code: int) -> int:
    sys.stdout.flush()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
