"""advise's answer as a JSON document and as a rich table (the two show the same facts)."""
from __future__ import annotations

from typing import Any

from fitplan.advisor.planner.solver import Advice, Candidate, plan_loss_of
from fitplan.hardware_spec import HardwareSpec
from fitplan.model_spec import ModelSpec
from fitplan.units import format_bytes

SCHEMA_VERSION = 1


def plan_dict(c: Candidate, context_note: str = "", spec: ModelSpec | None = None) -> dict[str, Any]:
    s = c.setup
    plan = {"runtime": s.runtime, "weights": s.weights, "kv_cache": s.kv_cache, "context": s.context,
            "batch": s.batch, "threads": s.threads, "gpu_layers": s.gpu_layers, "gpus": s.gpus,
            "cpu_moe_layers": s.cpu_moe_layers, "flash_attn": s.flash_attn, "placement": c.placement}
    if s.layer_map:
        from fitplan.advisor.planner.placement import overrides

        plan["layer_map"], plan["expert_map"] = list(s.layer_map), list(s.expert_map)
        plan["tensor_overrides"] = overrides(spec, s) if spec is not None else []
    if s.prune:
        plan["prune"], plan["sparse_kernels"] = s.prune, s.sparse_kernels
    if s.disk_layers:
        plan["disk_layers"] = s.disk_layers
    if c.speculation:
        plan["speculative"] = c.speculation
    if context_note:
        plan["context_note"] = context_note
    if spec is not None:
        from fitplan.strategies.weights_source import weights_source

        weight_bytes = sum(m.weights for m in c.memory.values())
        plan["weights_source"] = weights_source(spec, c.fmt, weight_bytes)
    return plan


def quality_dict(c: Candidate) -> dict[str, Any]:
    own = c.fmt.ppl_increase
    if own is None or not c.source_loss or not c.converted:
        return {"ppl_increase": own, "source": c.fmt.quality_source}
    return {"ppl_increase": plan_loss_of(c),
            "source": f"{c.fmt.quality_source}, plus the source file's own {c.source_loss:g} (it carries over)"}


def predicted_dict(c: Candidate) -> dict[str, Any]:
    """Memory per device, and speed where it was computed, each with its provenance."""
    out: dict[str, Any] = {"memory": {d: m.as_dict() for d, m in c.memory.items()}}
    provenance = {"memory": "estimated: exact weight bytes, formula KV cache and buffers, "
                            "runtime constants from runtimes.toml"}
    if c.speed is not None:
        out.update(c.speed.as_dict())
        provenance["speed"] = c.speed.provenance
        provenance["speed_basis"] = c.speed.basis
    out["provenance"] = provenance
    return out


def candidate_dict(c: Candidate, spec: ModelSpec | None = None) -> dict[str, Any]:
    return {
        "fits": c.fits, "plan": plan_dict(c, spec=spec),
        "predicted": predicted_dict(c),
        "quality": quality_dict(c),
        "why": c.reason or "fits",
    }


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """The plans no other plan beats on all of speed, quality and memory (largest device total)."""
    def point(c: Candidate) -> tuple[float, float, int]:
        loss = plan_loss_of(c)
        return (-c.speed.decode_tokens_per_s, loss, max(m.total for m in c.memory.values()))

    points = [(c, point(c)) for c in candidates if c.speed is not None]
    front = [c for c, p in points
             if not any(q != p and all(a <= b for a, b in zip(q, p)) for _, q in points)]
    return sorted(front, key=lambda c: point(c))


def advice_document(spec: ModelSpec, hw: HardwareSpec, advice: Advice, *, top: int | None = None) -> dict[str, Any]:
    chosen = advice.chosen
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "name": spec.name, "source": spec.source, "location": spec.location, "hub_id": spec.hub_id,
            "architecture": spec.architecture, "parameters": spec.parameters,
            "active_parameters": spec.active_parameters, "layers": spec.layers,
            "hidden_size": spec.hidden_size, "heads": spec.heads, "kv_heads": spec.kv_heads,
            "head_dim": spec.head_dim, "experts": spec.experts, "experts_per_token": spec.experts_per_token,
            "max_context": spec.max_context, "native_dtype": spec.native_dtype,
            "stored_weight_bytes": spec.stored_bytes,
        },
        "hardware": {
            "name": hw.name, "detected": hw.detected,
            "gpus": [{"name": g.name, "memory_bytes": g.memory_bytes, "usable_bytes": g.usable_bytes} for g in hw.gpus],
            "cpu": {"name": hw.cpu.name, "cores": hw.cpu.cores, "threads": hw.cpu.threads},
            "ram_bytes": hw.ram_bytes, "ram_usable_bytes": hw.ram_usable_bytes,
        },
        "fits": advice.fits,
        "plan": plan_dict(chosen, advice.context_note, spec),
        "predicted": predicted_dict(chosen),
        "quality": quality_dict(chosen),
        "why": chosen.reason or "fits",
        "alternatives": [candidate_dict(c, spec) for c in advice.alternatives[:top]],
        "pareto": [candidate_dict(c, spec) for c in pareto_front([advice.chosen, *advice.alternatives] if advice.fits else [])],
        "rejected": [{"candidate": c.label, "reason": c.reason} for c in advice.rejected],
        "excluded": [{"weights": name, "reason": why} for name, why in advice.excluded],
        "scale_out": advice.scale_out.as_dict() if advice.scale_out else None,
    }


def shown(text: Any) -> str:
    """A string from a file or the user as rich prints it literally: no terminal escapes (printable) and
    no rich markup (a model named '[link=https://...]' would otherwise print as a hyperlink)."""
    from rich.markup import escape

    from fitplan.user_files import printable

    return escape(printable(str(text)))


def render(doc: dict[str, Any], console: Any, *, top: int = 8) -> None:
    """Print the recommendation, its memory per device, the alternatives and the rejections."""
    from rich.table import Table

    m, plan = doc["model"], doc["plan"]
    console.print(f"[bold]{shown(m['name'])}[/] ({m['parameters'] / 1e9:.2f}B parameters, "
                  f"{m['active_parameters'] / 1e9:.2f}B active, {m['layers']} layers) on [bold]{shown(doc['hardware']['name'])}[/]")
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
    if not doc["fits"]:
        console.print(f"  [red]{shown(doc['why'])}[/]")
        out = doc.get("scale_out")
        if out:
            console.print(f"  would fit on {out['gpus']} x {out['gpu']} ({out['nodes']} node(s)) with vLLM, "
                          f"{out['weights']}, {format_bytes(out['need_per_gpu_bytes'])} needed per GPU:\n  {shown(out['command'])}")
    predicted = doc["predicted"]
    if "decode_tokens_per_s" in predicted:
        p = predicted["provenance"]
        console.print(f"speed ({p['speed']}; {p['speed_basis']}): decode {predicted['decode_tokens_per_s']:.1f} tok/s, "
                      f"prefill {predicted['prefill_tokens_per_s']:.0f} tok/s, "
                      f"TTFT {predicted['ttft_s']:.2f} s for a 512-token prompt")
    table = Table(title="predicted memory (estimated)", title_justify="left")
    for column in ("device", "weights", "kv_cache", "activations", "overhead", "total"):
        table.add_column(column, justify="left" if column == "device" else "right")
    for device, parts in doc["predicted"]["memory"].items():
        table.add_row(device, *(format_bytes(parts[k]) for k in ("weights", "kv_cache", "activations", "overhead", "total")))
    console.print(table)
    if doc["alternatives"]:
        alt = Table(title="alternatives that fit", title_justify="left")
        for column in ("runtime", "weights", "placement", "ppl +", "largest device total", "decode tok/s"):
            alt.add_column(column)
        for a in doc["alternatives"][:top]:
            p = a["plan"]
            ppl = a["quality"]["ppl_increase"]
            biggest = max(a["predicted"]["memory"].items(), key=lambda kv: kv[1]["total"])
            decode = a["predicted"].get("decode_tokens_per_s")
            alt.add_row(p["runtime"], p["weights"], p["placement"], "?" if ppl is None else f"{ppl:.3f}",
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
