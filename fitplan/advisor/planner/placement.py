"""Exact placement of blocks and routed experts over GPUs and the CPU: a small MILP.

Units: each block's attention-and-dense part (with its KV cache), and each MoE block's routed
experts. Binary x[u, d] puts unit u on device d; every unit goes to one device; each device's
units fit beside what it holds anyway (overhead, buffers, embeddings and head); the objective is
the decode time per token, sum of x[u, d] x time(u, d), where time = bytes the unit reads per token
/ the device's bandwidth (routed experts read k/n of their bytes). Solved with
scipy.optimize.milp (HiGHS). llama.cpp runs it with every layer offloaded and tensor overrides
(`-ot`) for what the solution keeps on the CPU.

Among equally fast solutions the contiguous one is taken (`_contiguous`: within each set of alike
units, the CPU's share is the first blocks, then each GPU's), as llama.cpp lays blocks out. A dense
model whose blocks are all alike is not given to the MILP at all (`uniform_blocks`): its contiguous
split, `-ngl N`, is the placement to use.
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


def uniform_blocks(spec: ModelSpec, context: int, kv: str) -> bool:
    """Whether every block is alike: the same tensors and shapes, no routed experts, the same KV cache.

    Then speed follows how many blocks each device holds, and the contiguous split (llama.cpp's
    `-ngl N`: the first blocks on the CPU) is as good as any map: an exact map could only swap the
    recipe's larger and smaller blocks (Q4_K_M's use_more_bits layers) within the GPU's last block of
    room, at one device hop per switch, and it runs with every layer offloaded, where llama.cpp keeps
    each layer's KV cache on the GPU (llama-kv-cache.cpp places it by model.dev_layer, which
    --override-tensor does not move)."""
    if spec.is_moe:
        return False
    shapes: dict[int, set[tuple[str, tuple[int, ...]]]] = {layer: set() for layer in range(spec.layers)}
    for t in spec.tensors:
        if t.role == "block" and t.layer is not None:
            shapes[t.layer].add((t.name.removeprefix(f"blk.{t.layer}."), t.shape))
    c = runtime_llamacpp.constants()
    kv_bytes = {layer_kv_bytes(spec, layer, context, kv, "llama.cpp", swa_extra=c["n_ubatch"], pad=c["kv_pad"])
                for layer in range(spec.layers)}
    return len(kv_bytes) == 1 and all(shapes[layer] == shapes[0] for layer in shapes)


def _contiguous(units: list[tuple[str, int, int, float]], choice: list[int], n_dev: int) -> list[int]:
    """The same solution with alike units (same kind, bytes held and read) reordered: each device keeps
    as many of them, the CPU (index n_dev - 1) taking the first layers, then gpu0, gpu1, ...: as fast,
    as full, and contiguous wherever alike units make it possible."""
    order = [n_dev - 1, *range(n_dev - 1)]
    classes: dict[tuple[str, int, float], list[int]] = {}
    for u, (kind, _, held, read) in enumerate(units):
        classes.setdefault((kind, held, read), []).append(u)
    out = list(choice)
    for members in classes.values():
        devices = sorted((choice[u] for u in members), key=order.index)
        for u, device in zip(sorted(members, key=lambda u: units[u][1]), devices):
            out[u] = device
    return out


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
    choice = _contiguous(units, [int(j) for j in result.x.reshape(n_units, n_dev).argmax(axis=1)], n_dev)
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
