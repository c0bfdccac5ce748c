"""Exact placement of blocks and routed experts over GPUs and the CPU: a small MILP.

Units: each block's attention-and-dense part (with its KV cache), and each MoE block's routed
experts. Binary x[u, d] puts unit u on device d; every unit goes to one device; each device's
units fit beside what it holds anyway (overhead, buffers, embeddings and head); the objective is
the decode time per token, sum of x[u, d] x time(u, d), where time = bytes the unit reads per token
/ the device's bandwidth (routed experts read k/n of their bytes). Solved with
scipy.optimize.milp (HiGHS). llama.cpp runs it with every layer offloaded and tensor overrides
(`-ot`) for what the solution keeps on the CPU.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fitplan.model_spec import ModelSpec
from fitplan.plan_spec import Setup, WeightBytes, gpu_name
from fitplan.strategies.kv_cache import layer_kv_bytes
from fitplan.strategies.runtimes.llamacpp import cost as runtime_llamacpp

if TYPE_CHECKING:
    from fitplan.hardware_spec import HardwareSpec


def _units(spec: ModelSpec, weights: WeightBytes, context: int, kv: str) -> list[tuple[str, int, int, float]]:
    """(kind, layer, bytes held, bytes read per token) of every unit."""
    held: dict[tuple[str, int], int] = {}
    read: dict[tuple[str, int], float] = {}
    for tensor, size in weights:
        if tensor.role != "block":
            continue
        key = ("experts" if tensor.experts else "block", tensor.layer or 0)
        held[key] = held.get(key, 0) + size
        share = spec.experts_per_token / tensor.experts if tensor.experts else 1.0
        read[key] = read.get(key, 0.0) + size * share
    c = runtime_llamacpp.constants()
    for layer in range(spec.layers):
        kv_bytes = layer_kv_bytes(spec, layer, context, kv, "llama.cpp", swa_extra=c["n_ubatch"], pad=c["kv_pad"])
        held[("block", layer)] = held.get(("block", layer), 0) + kv_bytes
        read[("block", layer)] = read.get(("block", layer), 0.0) + kv_bytes / 2  # mid-context on average
    return [(kind, layer, held[(kind, layer)], read[(kind, layer)]) for kind, layer in sorted(held)]


def milp_setup(spec: ModelSpec, base: Setup, weights: WeightBytes, capacity: Callable[[str], int],
               bandwidth: Callable[[str], float]) -> Setup | None:
    """The fastest placement that fits, as a Setup with explicit maps; None when none fits."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp

    gpus = [gpu_name(i) for i in range(base.gpus)]
    devices = [*gpus, "cpu"]
    units = _units(spec, weights, base.context * base.batch, base.kv_cache)
    # what each device holds whatever the placement: measured from the all-on-GPU and all-on-CPU plans
    all_gpu = base.with_(gpu_layers=spec.layers, layer_map=tuple(gpus[i * len(gpus) // spec.layers]
                                                                 for i in range(spec.layers)))
    unit_bytes = {(k, layer): h for k, layer, h, _ in units}
    fixed = {}
    on_gpu = runtime_llamacpp.memory(spec, all_gpu, weights)
    for d in gpus:
        held = sum(h for (k, layer), h in unit_bytes.items() if all_gpu.layer_map[layer] == d)
        fixed[d] = on_gpu[d].total - held
    on_cpu = runtime_llamacpp.memory(spec, all_gpu.with_(layer_map=("cpu",) * spec.layers), weights)
    fixed["cpu"] = on_cpu["cpu"].total - sum(unit_bytes.values())
    n_units, n_dev = len(units), len(devices)
    cost = np.array([read / bandwidth(d) for _, _, _, read in units for d in devices])
    one_device = np.zeros((n_units, n_units * n_dev))
    for u in range(n_units):
        one_device[u, u * n_dev:(u + 1) * n_dev] = 1
    fits = np.zeros((n_dev, n_units * n_dev))
    for u, (_, _, held, _) in enumerate(units):
        for j in range(n_dev):
            fits[j, u * n_dev + j] = held
    room = np.array([max(0, capacity(d) - fixed[d]) for d in devices], dtype=float)
    result = milp(cost, integrality=np.ones(n_units * n_dev), bounds=Bounds(0, 1),
                  constraints=[LinearConstraint(one_device, 1, 1), LinearConstraint(fits, -np.inf, room)])
    if not result.success:
        return None
    choice = result.x.reshape(n_units, n_dev).argmax(axis=1)
    layer_map, expert_map = ["cpu"] * spec.layers, ["cpu"] * spec.layers
    for (kind, layer, _, _), j in zip(units, choice):
        (expert_map if kind == "experts" else layer_map)[layer] = devices[j]
    for layer in range(spec.layers):  # a dense block's "experts" follow the block
        if not any(k == "experts" and unit_layer == layer for k, unit_layer, _, _ in units):
            expert_map[layer] = layer_map[layer]
    return base.with_(gpu_layers=sum(d != "cpu" for d in layer_map), layer_map=tuple(layer_map),
                      expert_map=tuple(expert_map) if spec.is_moe else ())


def overrides(spec: ModelSpec, setup: Setup) -> list[str]:
    """llama.cpp --override-tensor rules that keep the CPU's share of an explicit placement there."""
    rules = []
    cpu_blocks = [i for i, d in enumerate(setup.layer_map) if d == "cpu"]
    if cpu_blocks:
        rules.append(rf"blk\.({'|'.join(map(str, cpu_blocks))})\.=CPU")
    cpu_experts = [i for i, d in enumerate(setup.expert_map) if d == "cpu" and i not in cpu_blocks]
    if cpu_experts:
        rules.append(rf"blk\.({'|'.join(map(str, cpu_experts))})\.ffn_.*_exps\.=CPU")
    return rules


def device_bandwidth(hw: HardwareSpec, threads: int) -> Callable[[str], float]:
    from fitplan.advisor.planner.speed import cpu_rates, gpu_rates

    rates = {"cpu": cpu_rates(hw, threads, None, "").bandwidth_GB_per_s}
    for i, gpu in enumerate(hw.gpus):
        rates[gpu_name(i)] = gpu_rates(gpu, None).bandwidth_GB_per_s
    return lambda device: rates[device] * 1e9
