"""advise's answer as a rich table: the same facts as its JSON document (advisor/planner/document.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fitplan.units import format_bytes
from fitplan.user_files import shown

if TYPE_CHECKING:
    from rich.console import Console

    from fitplan.advisor.planner.quality import QualityReport


def render(doc: dict[str, Any], console: Console, *, top: int = 8) -> None:
    """Print the recommendation, its memory per device, the alternatives and the rejections."""
    from rich.table import Table

    m, plan = doc["model"], doc["plan"]
    console.print(f"[bold]{shown(m['name'])}[/] ({m['parameters'] / 1e9:.2f}B parameters, "
                  f"{m['active_parameters'] / 1e9:.2f}B active, {m['layers']} layers) "
                  f"on [bold]{shown(doc['hardware']['name'])}[/]")
    kinds = m.get("layer_caches") or {}
    if set(kinds) - {"full"}:
        meaning = {"recurrent": "recurrent: a fixed state per sequence", "sliding": "sliding/chunked: at most their window",
                   "chunked": "sliding/chunked: at most their window", "none": "none: no cache",
                   "shared": "shared: read an earlier layer's cache"}
        legend = "; ".join(dict.fromkeys(meaning[k] for k in kinds if k in meaning))
        console.print("  layers: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items()) + f" ({legend})")
    if m.get("counted"):
        console.print(f"  parameters: {shown(m['counted'])}")
    for note in m.get("notes") or []:
        console.print(f"  {shown(note)}")
    verdict = "[green]fits[/]" if doc["fits"] else "[red]does not fit this machine[/]"
    where = {"gpu": "all layers on GPU", "cpu": "CPU only",
             "split": f"{plan['gpu_layers']} of {m['layers']} layers on GPU, rest on CPU",
             "experts-cpu": f"all layers on GPU, routed experts of the first {plan['cpu_moe_layers']} on CPU",
             "exact": "exact placement (MILP): " + ", ".join(plan.get("tensor_overrides", [])),
             "disk": f"last {plan.get('disk_layers')} of {m['layers']} layers on disk (accelerate offload), "
                     f"{plan['gpu_layers']} on GPU, the rest on CPU",
             }[plan["placement"]]
    console.print(f"{verdict}: {plan['runtime']} {plan['weights']}, KV cache {plan['kv_cache']}, "
                  f"context {plan['context']}, batch {plan['batch']}, {plan['threads']} threads, {where}")
    if plan.get("context_note"):
        console.print(f"  context {plan['context']}: {shown(plan['context_note'])}")
    quality = doc.get("quality") or {}
    if str(quality.get("source", "")).startswith("measured"):
        console.print(f"  quality: +{quality['ppl_increase']:.3f} perplexity on Llama-3-8B's scale, "
                      f"{shown(quality['source'])}")
    if quality.get("qat"):
        console.print(f"  QAT: {shown(quality['qat']['advice'])}")
    sibling = doc.get("smaller_sibling")
    if sibling:
        asked = sibling["instead_of"]
        was = (f"{asked['weights']} (perplexity +{asked['ppl_increase']:g})" if asked.get("weights")
               and asked.get("ppl_increase") is not None else "no format that fits")
        rate = f", {sibling['decode_tokens_per_s']:.1f} tok/s" if sibling.get("decode_tokens_per_s") else ""
        gain = f" (perplexity +{sibling['ppl_increase']:g})" if sibling.get("ppl_increase") is not None else ""
        console.print(f"  a smaller sibling at higher precision: {shown(sibling['name'])} "
                      f"({sibling['parameters'] / 1e9:.1f}B) at {sibling['weights']}{gain}{rate}, "
                      f"instead of {shown(asked['name'])} at {was}")
    if not doc["fits"]:
        console.print(f"  [red]{shown(doc['why'])}[/]")
        out = doc.get("scale_out")
        if out:
            console.print(f"  would fit on {out['gpus']} x {out['gpu']} ({out['nodes']} node(s)) with vLLM, "
                          f"{out['weights']}, {format_bytes(out['need_per_gpu_bytes'])} needed per GPU:\n"
                          f"  {shown(out['command'])}")
    predicted = doc["predicted"]
    if "decode_tokens_per_s" in predicted:
        p = predicted["provenance"]
        how = f"{p['speed']} ({p['calibration']['summary']})" if "calibration" in p else p["speed"]
        console.print(f"speed ({how}; {p['speed_basis']}): decode {predicted['decode_tokens_per_s']:.1f} tok/s, "
                      f"prefill {predicted['prefill_tokens_per_s']:.0f} tok/s, "
                      f"TTFT {predicted['ttft_s']:.2f} s for a 512-token prompt")
        gpus = doc["hardware"]["gpus"]
        bound = predicted.get("decode_bound_by", "")
        if len(gpus) > 1 and bound:
            name = gpus[int(bound[3:])]["name"] if bound.startswith("gpu") else "the CPU"
            console.print(f"  decode is bound by {bound} ({shown(name)}): the largest part of each token's time")
    split = predicted.get("gpu_split")
    if split:
        console.print(f"  layers per GPU {'+'.join(map(str, split['layers']))} (split by {split['by']}; "
                      f"--tensor-split {','.join(f'{v:g}' for v in plan['tensor_split'])})")
    table = Table(title="predicted memory (estimated)", title_justify="left")
    for column in ("device", "weights", "kv_cache", "activations", "overhead", "total"):
        table.add_column(column, justify="left" if column == "device" else "right")
    for device, parts in doc["predicted"]["memory"].items():
        table.add_row(device, *(format_bytes(parts[k]) for k in ("weights", "kv_cache", "activations", "overhead", "total")))
    console.print(table)
    if doc.get("capacity"):
        _render_capacity(doc["capacity"], plan["context"], console)
    if doc["alternatives"]:
        alt = Table(title="alternatives that fit", title_justify="left")
        for column in ("runtime", "weights", "placement", "ppl +", "largest device total", "decode tok/s"):
            alt.add_column(column)
        for a in doc["alternatives"][:top]:
            p = a["plan"]
            ppl = a["quality"]["ppl_increase"]
            biggest = max(a["predicted"]["memory"].items(), key=lambda kv: kv[1]["total"])
            decode = a["predicted"].get("decode_tokens_per_s")
            where = p["placement"] + (f" by {a['predicted']['gpu_split']['by']}" if "gpu_split" in a["predicted"] else "")
            alt.add_row(p["runtime"], p["weights"], where, "?" if ppl is None else f"{ppl:.3f}",
                        f"{format_bytes(biggest[1]['total'])} ({biggest[0]})", "-" if decode is None else f"{decode:.1f}")
        console.print(alt)
    for r in doc["rejected"][:top]:
        console.print(f"  [dim]rejected[/] {shown(r['candidate'])}: {shown(r['reason'])}")
    if len(doc["rejected"]) > top:
        console.print(f"  [dim]... and {len(doc['rejected']) - top} more rejected (see --json)[/]")
    by_reason: dict[str, list[str]] = {}
    for e in doc.get("excluded", []):
        by_reason.setdefault(e["reason"], []).append(e["weights"])
    for reason, names in by_reason.items():
        console.print(f"  [dim]not weighed here[/] {shown(', '.join(names))}: {shown(reason)}")


def _render_capacity(cap: dict[str, Any], context: int, console: Console) -> None:
    """Sessions served at once per context, and the aggregate decode rate at the plan's context."""
    from rich.table import Table

    table = Table(title=f"serving capacity ({shown(cap['how'])})", title_justify="left")
    table.add_column("context")
    for row in cap["contexts"]:
        table.add_column(str(row["context"]), justify="right")
    table.add_row("sessions", *(str(r["sessions"]) for r in cap["contexts"]))
    vllm = cap.get("vllm")
    if vllm:
        table.add_row(f"vLLM (bf16, TP {vllm['tensor_parallel_size']})", *(str(r["sessions"]) for r in vllm["contexts"]))
    console.print(table)
    rates = [f"{a['sessions']}: {a['tokens_per_s']:.0f} tok/s ({a['per_session_tokens_per_s']:.1f} each)" if a["fits"]
             else f"{a['sessions']}: does not fit" for a in cap["aggregate"]]
    console.print(f"  aggregate decode at context {context}, by sessions served: {'; '.join(rates)}")
    if vllm:
        console.print(f"  vLLM: {vllm['kv_tokens']} tokens of paged KV cache after gpu_memory_utilization (sessions = "
                      "tokens / context)")


def render_survey(hardware: str, rows: list[Any], console: Console) -> None:
    """`fitplan models --hardware`: one row a model, the ones that run first (survey.py ranks them)."""
    from rich.table import Table

    fitting = sum(1 for r in rows if r.fits)
    console.print(f"[bold]{shown(hardware)}[/]: {fitting} of {len(rows)} catalog models fit (llama.cpp, largest "
                  "first; `advise MODEL` weighs every runtime and format)")
    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("model", "params", "format", "placement", "tok/s", "memory"):
        table.add_column(column, no_wrap=column != "model", overflow="fold",
                         justify="right" if column in ("params", "tok/s", "memory") else "left")
    for r in rows:
        if not r.fits:
            table.add_row(shown(r.name), f"{r.parameters / 1e9:.1f}B", "-", "does not fit", "-", "-")
            continue
        rate = f"{r.decode_tokens_per_s:.1f}" if r.decode_tokens_per_s else "-"
        table.add_row(shown(r.name), f"{r.parameters / 1e9:.1f}B", r.format or "-", r.placement,
                      rate if r.meets_rate else f"{rate} slow",
                      format_bytes(sum(r.memory_bytes.values())) if r.memory_bytes else "-")
    console.print(table)
    for r in rows:
        if not r.fits:
            console.print(f"  {shown(r.name)}: {shown(r.reason)}")


def render_quality(report: QualityReport, console: Console) -> None:
    """`fitplan quality`'s table: one row per format, against the reference named above it."""
    import os

    from rich.table import Table

    ref = report.reference
    if ref:
        where = shown(os.path.basename(ref["file"])) if ref.get("file") else "written from the input"
        console.print(f"reference: {where} ({ref['format']}, {format_bytes(ref['bytes'])}), perplexity {ref['ppl']:.3f}, "
                      f"decode {ref['decode_tokens_per_s']:.1f} tok/s; {ref['tokens_scored']} tokens of "
                      f"{shown(report.text.get('title') or report.text['name'])} scored")
    table = Table(show_edge=False)
    for column in ("format", "KLD mean", "KLD p99", "top-1 same", "ppl", "ppl ratio", "size", "decode tok/s"):
        table.add_column(column, justify="left" if column == "format" else "right")
    for f in report.formats:
        table.add_row(f.format + (" *" if f.cached else ""), f"{f.kld_mean:.4f}", f"{f.kld_p99:.4f}",
                      f"{100 * f.top1_agreement:.1f}%", f"{f.ppl:.3f}", f"{f.ppl_ratio:.4f}", format_bytes(f.bytes),
                      f"{f.decode_tokens_per_s:.1f}")
    console.print(table)
    if any(f.cached for f in report.formats):
        console.print("  * from the cache (--no-cache measures again)")
    for f in report.formats:
        if f.fallback:
            wrote = ", ".join(f"{n} tensor{'s' * (n != 1)} as {t}" for t, n in sorted(f.fallback.items()))
            console.print(f"  {f.format}: llama.cpp wrote {wrote}, their rows not being a whole number of its blocks")
    for note in report.notes:
        console.print(f"  {shown(note)}")


class _QualityProgress:
    """A rich progress bar over the formats, with the time left; silent where stderr is not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Any = None
        self.task: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True), transient=True)

    def __call__(self, what: str, done: int, steps: int) -> None:
        if self.bar is None:
            return
        if self.task is None:
            self.task = self.bar.add_task(what, total=steps)
        self.bar.update(self.task, description=what, completed=done, total=steps)

    def __enter__(self) -> _QualityProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def quality_progress(enabled: bool) -> _QualityProgress:
    return _QualityProgress(enabled)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _summary_row(s: dict[str, Any]) -> list[str]:
    """format, placement, context (longest that fits), decode, prefill, headroom: one machine."""
    if not s["fits"]:
        return ["-", "does not fit", "-", "-", "-", "-"]
    context = f"{s['context']} ({s['max_context']})" if s.get("max_context") else str(s["context"])
    headroom = format_bytes(s["headroom_bytes"]) if s.get("headroom_bytes") is not None else "-"
    return [s["format"], shown(s["placement"]), context, _rate(s["decode_tokens_per_s"]),
            _rate(s["prefill_tokens_per_s"]), headroom]


_COLUMNS = ("format", "placement", "context", "decode tok/s", "prefill tok/s", "headroom")


def _machines_table(first: tuple[str, ...]) -> Any:
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in (*first, *_COLUMNS):
        table.add_column(column, overflow="fold", justify="right" if "tok/s" in column or column == "headroom" else "left")
    return table


def render_compare(doc: dict[str, Any], console: Console) -> None:
    """`advise MODEL --compare A,B,C`: each profile's best plan, one row a profile, then what limits each."""
    console.print(f"[bold]{shown(doc['model'])}[/]: the best plan on each profile (every runtime and format "
                  "weighed; context: asked (longest that fits); headroom: least memory left on a device)")
    table = _machines_table(("hardware",))
    for entry in doc["compare"]:
        row = _summary_row(entry["summary"])
        if entry["summary"]["fits"]:
            row[0] = f"{entry['plan']['runtime']} {row[0]}"
        table.add_row(shown(entry["hardware"]), *row)
    console.print(table)
    for entry in doc["compare"]:
        p = entry["predicted"].get("provenance", {})
        speed = f" [dim](speed: {shown(p['speed'])}; {shown(p.get('speed_basis', ''))})[/]" if p.get("speed") else ""
        notes = "".join(f"; {shown(n)}" for n in entry["summary"]["notes"])
        console.print(f"  {shown(entry['hardware'])}: {shown(entry['summary']['limit'])}{notes}{speed}")


def render_hardware(doc: dict[str, Any], console: Console, *, top: int = 25) -> None:
    """`fitplan hardware --for MODEL`: every profile, those that meet the requirement first."""
    req = doc["requirement"]
    wants = [f"context {req['context']}" if req["context"] else "", f">= {req['min_tokens_per_s']:g} tok/s"
             if req["min_tokens_per_s"] else "", f"perplexity +{req['max_ppl_increase']:g} at most"
             if req["max_ppl_increase"] is not None else "perplexity loss about Q4_K_M's at most"]
    rows = doc["profiles"]
    meeting = sum(1 for r in rows if r["meets"])
    console.print(f"[bold]{shown(doc['model'])}[/] ({', '.join(w for w in wants if w)}): {meeting} of {len(rows)} "
                  f"profiles meet it ({doc['runtime']}, GGUF Q8_0..Q2_K; the smallest first)")
    if doc["smallest"]:
        console.print(f"  smallest that meets it: [bold]{shown(doc['smallest'])}[/]")
    if doc["cheapest"]:
        c = doc["cheapest"]
        console.print(f"  cheapest that meets it: [bold]{shown(c['hardware'])}[/] (${c['price_usd']:,.0f}, "
                      f"{shown(c['price_date'])}; of the profiles with a sourced price)")
    table = _machines_table(("", "hardware"))
    for r in rows[:top]:
        mark = "[green]yes[/]" if r["meets"] else "[yellow]slow[/]" if r["fits"] else "[red]no[/]"
        table.add_row(mark, shown(r["hardware"]), *_summary_row(r))
    console.print(table)
    if len(rows) > top:
        console.print(f"  [dim]... and {len(rows) - top} more (see --json)[/]")
