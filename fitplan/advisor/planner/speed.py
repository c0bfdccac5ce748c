"""The speed model: roofline estimates per device, calibrated by probes where the user ran them.

decode, per step: each device takes max(bytes it reads / bandwidth, FLOPs / matmul rate); devices
holding layers run one after another, so their times add. Bytes read = the active weights on the
device (a routed expert counts k/n) + the KV cache read at the current position. prefill of P
tokens: the same per device with P x the FLOPs (plus attention's P^2 term) and the weights read
once per n_ubatch chunk. TTFT = prefill + one decode step. Efficiencies scale the device rates:
defaults from runtimes.toml ("estimated"), or fitted to a real run of this model on this machine
("calibrated"); `fitplan verify` gives "measured".
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from fitplan.model_spec import ModelSpec, TensorInfo
from fitplan.plan_spec import Setup, WeightBytes
from fitplan.strategies.speed_terms import SpeedTerms, kernel_tflops, terms_for, type_class

if TYPE_CHECKING:
    from fitplan.hardware_spec import GPUSpec, HardwareSpec
    from fitplan.profiles.probes import MachineProbes


@dataclass(frozen=True)
class DeviceRates:
    """What one device sustains for this plan (threads considered), before efficiency."""

    bandwidth_GB_per_s: float
    matmul_GFLOP_per_s: float  # matrix-matrix; a matrix-vector product is bandwidth-bound instead
    source: str  # "probe", "spec sheet", "assumed"
    power_W: float | None = None  # the board's power limit, where its spec sheet gives one


@dataclass(frozen=True)
class Efficiency:
    decode: float
    prefill: float
    provenance: str  # "estimated" | "calibrated"


@dataclass(frozen=True)
class SpeedPrediction:
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    ttft_s: float
    batch_tokens_per_s: float
    provenance: str
    basis: str
    decode_full_context_tokens_per_s: float = 0.0  # the decode rate once the context is full
    decode_bound_by: str = ""  # the device whose part of a decode step is the largest ("gpu1", "cpu")

    def as_dict(self) -> dict[str, Any]:
        return {"decode_tokens_per_s": round(self.decode_tokens_per_s, 3), "decode_bound_by": self.decode_bound_by,
                "decode_full_context_tokens_per_s": round(self.decode_full_context_tokens_per_s, 3),
                "prefill_tokens_per_s": round(self.prefill_tokens_per_s, 3), "ttft_s": round(self.ttft_s, 4),
                "batch_tokens_per_s": round(self.batch_tokens_per_s, 3)}


Placement = dict[str, list[tuple[TensorInfo, int]]]


def _embed_is_head(spec: ModelSpec, placed: Placement) -> bool:
    """A tied embedding with no output tensor placed is read as the head; otherwise it is a row lookup."""
    return spec.tied_embeddings and not any(t.role == "output" for items in placed.values() for t, _ in items)


def _reads(spec: ModelSpec, placed: Placement, batch: int) -> dict[str, tuple[float, float]]:
    """(weight bytes read, weight FLOPs) per device for one decode step of `batch` sequences."""
    embed_is_head = _embed_is_head(spec, placed)
    out: dict[str, tuple[float, float]] = {}
    for device, items in placed.items():
        nbytes = flops = 0.0
        for tensor, size in items:
            if tensor.role == "lookup" or tensor.role == "embed" and not embed_is_head:
                continue  # an input embedding is a row lookup: negligible reads, no FLOPs
            if tensor.experts:  # chance that a given expert serves at least one of the batch's tokens
                share = 1 - (1 - spec.experts_per_token / tensor.experts) ** batch
                nbytes += size * share
                flops += 2 * tensor.numel * spec.experts_per_token / tensor.experts * batch
            else:
                nbytes += size
                flops += 2 * tensor.numel * batch if tensor.is_matrix else 0
        out[device] = (nbytes, flops)
    return out


def _head_flops(spec: ModelSpec, placed: Placement) -> dict[str, float]:
    """The output head's FLOPs per token on each device (a tied embedding read as the head, as _reads)."""
    heads = ("output", "embed") if _embed_is_head(spec, placed) else ("output",)
    return {device: sum(2.0 * t.numel for t, _ in items if t.role in heads) for device, items in placed.items()}


@dataclass(frozen=True)
class AttentionLoad:
    """The caches of the layers one device holds: attention layers grouped by window, and the
    recurrent state they read and write each token."""

    groups: tuple[tuple[int, float, int | None], ...]  # (layers, KV bytes per cached token, window or None)
    state_bytes: float  # recurrent state per sequence
    query_width: int  # heads x key width: attention FLOPs per cached token are 4 x this

    def cells(self, position: int) -> float:
        """Cached tokens a token at `position` attends over, summed over the layers."""
        return sum(n * min(position, w or position) for n, _, w in self.groups)

    def kv_bytes(self, position: int) -> float:
        """Bytes one sequence reads at `position`: each layer's cached tokens, plus the recurrent
        state read and written once."""
        return sum(n * b * min(position, w or position) for n, b, w in self.groups) + 2 * self.state_bytes

    def flops(self, position: int) -> float:
        return 4.0 * self.query_width * self.cells(position)  # QK^T and AV


def attention_loads(spec: ModelSpec, devices: list[str], element_bytes: float, runtime: str) -> dict[str, AttentionLoad]:
    """AttentionLoad per device, from the device of each layer (`devices[i]`)."""
    from fitplan.model_spec import STATE_BYTES_PER_ELEMENT
    from fitplan.strategies.kv_cache import kv_widths

    groups: dict[str, dict[tuple[float, int | None], int]] = {}
    state: dict[str, float] = {}
    for layer, device in enumerate(devices):
        cache = spec.caches[layer]
        if cache.state_elements:
            state[device] = state.get(device, 0.0) + cache.state_elements * STATE_BYTES_PER_ELEMENT
        if cache.attends:
            k, v = kv_widths(spec, runtime, layer)
            key = ((k + v) * element_bytes, cache.window if cache.windowed else None)
            by_key = groups.setdefault(device, {})
            by_key[key] = by_key.get(key, 0) + 1

    def ordered(by_key: dict[tuple[float, int | None], int]) -> tuple[tuple[int, float, int | None], ...]:
        return tuple((n, b, w) for (b, w), n in sorted(by_key.items(), key=lambda g: (g[0][0], g[0][1] or 0)))

    return {d: AttentionLoad(ordered(groups.get(d, {})),
                             state.get(d, 0.0), spec.heads * spec.head_dim)
            for d in set(devices)}


_NO_LAYERS = AttentionLoad((), 0.0, 0)


@dataclass(frozen=True)
class StepModel:
    """What the step-time functions need of one plan, computed once."""

    spec: ModelSpec
    placed: Placement
    layers_on: dict[str, int]
    attention: dict[str, AttentionLoad]
    rates: dict[str, DeviceRates]
    efficiency: Efficiency
    terms: dict[str, SpeedTerms]  # per GPU device with fitted terms; the rest use the spec-sheet roofline
    type_class: str
    flash_attn: bool
    hops: int  # device switches a token's activations make
    single: dict[str, tuple[float, float]]  # _reads at batch 1, shared by decode and every prompt chunk
    head_flops: dict[str, float]  # the output head's FLOPs per token, per device
    pcie_GB_per_s: float | None = None  # the first GPU's host link (op offload of CPU layers' prompt chunks)
    op_offload: bool = True  # llama.cpp's op offload of those chunks (Setup.op_offload)
    call_s: float = 0.0  # a fixed cost per decode step beside the roofline: dynamic int8's per-call work

    def prompt_flops(self, device: str, tokens: int) -> float:
        """Matmul FLOPs of a prompt chunk: the output head runs for the one position the runtime outputs
        (llama.cpp and llama-cpp-python compute logits only where asked), the rest for every token."""
        head = self.head_flops.get(device, 0.0)
        return (self.single[device][1] - head) * tokens + head


def decode_step_seconds(plan: StepModel, batch: int, position: int) -> float:
    """One decode step of `batch` sequences at `position`: device times add (layers run in order)."""
    return sum(decode_device_seconds(plan, batch, position).values()) + _fixed_step_seconds(plan) + plan.call_s


def decode_device_seconds(plan: StepModel, batch: int, position: int) -> dict[str, float]:
    """Each device's part of one decode step: the largest is the device that bounds decode."""
    reads = plan.single if batch == 1 else _reads(plan.spec, plan.placed, batch)
    out = {}
    for device, (nbytes, flops) in reads.items():
        load = plan.attention.get(device, _NO_LAYERS)
        kv_bytes, attn_flops = load.kv_bytes(position), load.flops(position)
        rate, terms = plan.rates[device], plan.terms.get(device)
        bandwidth, matmul = rate.bandwidth_GB_per_s * 1e9, rate.matmul_GFLOP_per_s * 1e9
        if terms is None:
            eff = plan.efficiency.decode
            out[device] = max((nbytes + kv_bytes * batch) / (bandwidth * eff), (flops + attn_flops * batch) / (matmul * eff))
            continue
        memory_s = nbytes / bandwidth * terms.read(plan.type_class) + kv_bytes * batch / bandwidth * terms.kv_read
        compute_s = (flops + attn_flops * batch) / matmul * terms.mm(plan.type_class)
        out[device] = max(memory_s, compute_s) + plan.layers_on[device] * terms.layer_step_s
    return out


def _fixed_step_seconds(plan: StepModel) -> float:
    terms = next(iter(plan.terms.values()), None)
    return terms.token_s + plan.hops * terms.hop_s if terms else 0.0


def prefill_seconds(plan: StepModel, tokens: int, *, ubatch: int, n_batch: int) -> float:
    """A prompt of `tokens` in chunks of `ubatch`. With fitted terms, GPUs holding every layer pipeline
    the chunks of one n_batch (llama.cpp's pipeline parallelism): a batch of m chunks takes the sum of
    its stages once plus m - 1 times the slowest."""
    if not plan.terms:
        return _roofline_prefill_seconds(plan, tokens, ubatch)
    holding = [d for d in plan.placed if plan.layers_on.get(d)]
    pipelined = len(holding) > 1 and all(d.startswith("gpu") for d in holding)
    total, done = 0.0, 0
    while done < tokens:
        batch_tokens = min(n_batch, tokens - done)
        chunks = []
        for start in range(done, done + batch_tokens, ubatch):
            n = min(ubatch, done + batch_tokens - start)
            chunks.append([_chunk_seconds(plan, d, n, start + n) for d in plan.placed])
        if pipelined:
            total += sum(chunks[0]) + sum(max(stages) for stages in chunks[1:])
        else:
            total += sum(sum(stages) for stages in chunks)
        done += batch_tokens
    return total


def _roofline_prefill_seconds(plan: StepModel, tokens: int, ubatch: int) -> float:
    """Spec-sheet roofline: per device max(FLOPs, weights read once per chunk), causal attention."""
    chunks = -(-tokens // ubatch)
    total = 0.0
    for device, (nbytes, _) in plan.single.items():
        attn_flops = plan.attention.get(device, _NO_LAYERS).flops(tokens // 2)
        rate = plan.rates[device]
        flops = plan.prompt_flops(device, tokens) + attn_flops * tokens
        compute_s = flops / (rate.matmul_GFLOP_per_s * 1e9 * plan.efficiency.prefill)
        memory_s = nbytes * chunks / (rate.bandwidth_GB_per_s * 1e9 * plan.efficiency.prefill)
        total += max(compute_s, memory_s)
    return total


OP_OFFLOAD_MIN_TOKENS = 32  # ggml-cuda's offload_op: batches of at least 32 tokens go to the GPU
# PCIe transfer rate per lane and direction, GB/s, by generation (PCI-SIG: 8, 16, 32 GT/s with 128b/130b)
PCIE_LANE_GB_PER_S = {3: 0.985, 4: 1.969, 5: 3.938}


def pcie_GB_per_s(gpu: GPUSpec) -> float | None:
    """The host link's spec rate, where the profile gives its generation and lanes."""
    if gpu.pcie_gen in PCIE_LANE_GB_PER_S and gpu.pcie_lanes:
        return PCIE_LANE_GB_PER_S[gpu.pcie_gen] * gpu.pcie_lanes
    return None


def _chunk_seconds(plan: StepModel, device: str, tokens: int, kv_cells: int) -> float:
    """One prompt chunk of `tokens` on `device`, attending over `kv_cells` cached positions."""
    spec, layers = plan.spec, plan.layers_on.get(device, 0)
    nbytes = plan.single[device][0]
    rate, terms = plan.rates[device], plan.terms.get(device)
    if (terms is None and plan.op_offload and plan.pcie_GB_per_s and plan.terms and tokens >= OP_OFFLOAD_MIN_TOKENS
            and device == "cpu"):
        # llama.cpp's op offload: the GPU computes the CPU-resident layers of a large batch, their weights
        # copied over the link for each chunk, so the link, not the host's FLOP/s, bounds prefill
        gpu = next(iter(plan.terms))
        on_gpu = replace(plan, rates={**plan.rates, device: plan.rates[gpu]}, terms={**plan.terms, device: plan.terms[gpu]})
        return nbytes / (plan.pcie_GB_per_s * 1e9) + _chunk_seconds(on_gpu, device, tokens, kv_cells)
    bandwidth, matmul = rate.bandwidth_GB_per_s * 1e9, rate.matmul_GFLOP_per_s * 1e9
    load = plan.attention.get(device, _NO_LAYERS)
    attn_flops = tokens * load.flops(kv_cells)
    if terms is None:  # a device without fitted terms (the host): its spec-sheet roofline for this chunk
        causal = load.flops(kv_cells // 2)
        eff = plan.efficiency.prefill
        return max((plan.prompt_flops(device, tokens) + causal * tokens) / (matmul * eff), nbytes / (bandwidth * eff))
    matmul_flops = plan.prompt_flops(device, tokens)
    seconds = matmul_flops / matmul * terms.mm(plan.type_class) + attn_flops / matmul * terms.attention
    energy = terms.energy(plan.type_class)
    if rate.power_W and energy:  # a long GEMM runs at the board's power limit, not its peak
        seconds = max(seconds, (matmul_flops + attn_flops) * energy / rate.power_W)
    if not plan.flash_attn:  # the f32 KQ scores are written, soft-maxed and read back
        seconds += tokens * load.cells(kv_cells) * spec.heads * 4 / bandwidth * terms.scores
    return seconds + nbytes / bandwidth * terms.read(plan.type_class) + layers * terms.layer_ubatch_s


def predict(model: StepModel, setup: Setup, *, prompt_tokens: int, ubatch: int = 512,
            n_batch: int | None = None) -> SpeedPrediction:
    """Decode, prefill, TTFT and batch throughput of a plan (batch = setup.batch for the last)."""
    position = prompt_tokens + 64  # a typical point of a short answer
    decode = 1 / decode_step_seconds(model, 1, position)
    full = 1 / decode_step_seconds(model, 1, setup.context)
    prefill_s = prefill_seconds(model, prompt_tokens, ubatch=ubatch, n_batch=n_batch or ubatch)
    batch = decode if setup.batch == 1 else setup.batch / decode_step_seconds(model, setup.batch, position)
    basis = ", ".join(sorted({f"{d}: {r.source}" for d, r in model.rates.items() if d in model.placed and model.placed[d]}))
    provenance = model.efficiency.provenance
    if model.terms and provenance != "calibrated":
        provenance = next(iter(model.terms.values())).provenance
    parts = decode_device_seconds(model, 1, position)
    bound = max(parts, key=lambda d: parts[d]) if parts else ""
    return SpeedPrediction(decode, prompt_tokens / prefill_s, prefill_s + 1 / decode, batch, provenance, basis, full,
                           bound)


def _table() -> dict[str, Any]:
    from fitplan.datafiles import load_table

    return load_table("fitplan.strategies.data", "runtimes.toml")["speed_defaults"]


def cpu_rates(hw: HardwareSpec, threads: int, probes: MachineProbes | None, weights: str) -> DeviceRates:
    """Host bandwidth and matmul rate for `threads` threads: probed, else spec sheet, else assumed."""
    defaults = _table()
    cores = hw.cpu.cores
    if probes is not None:
        one = probes.host_read_GB_per_s_1thread or probes.host_copy_GB_per_s_1thread
        every = probes.host_read_GB_per_s_all or probes.host_copy_GB_per_s_all
        kind = "bf16" if weights in ("bf16", "BF16") else "fp32"
        mm = probes.matmul_GFLOP_per_s

        single = mm.get(f"{kind}_mm_1thread") or mm.get("fp32_mm_1thread")
        every_core = mm.get(f"{kind}_mm_all") or mm.get("fp32_mm_all")
        if one and every and single and every_core:  # one thread's rate times threads, capped by all cores'
            return DeviceRates(min(one.value * threads, every.value), min(single.value * threads, every_core.value),
                               "probe")
    flops = defaults["cpu_core_GFLOP_per_s"] * min(threads, cores)
    if hw.cpu.memory_bandwidth_GB_per_s:
        return DeviceRates(hw.cpu.memory_bandwidth_GB_per_s, flops, "spec sheet")
    return DeviceRates(defaults["cpu_memory_GB_per_s"], flops, "assumed")


def gpu_rates(gpu: GPUSpec, probed: dict[str, Any] | None) -> DeviceRates:
    if probed and "memory_GB_per_s" in probed and "fp16_TFLOP_per_s" in probed:
        return DeviceRates(probed["memory_GB_per_s"].value, probed["fp16_TFLOP_per_s"].value * 1000, "probe")
    flops = gpu.fp16_tflops or kernel_tflops(gpu)  # an INT8 figure alone (Jetson Orin) sets the kernel rate
    if gpu.memory_bandwidth_GB_per_s and flops:
        return DeviceRates(gpu.memory_bandwidth_GB_per_s, flops * 1000, "spec sheet", gpu.board_power_W)
    return DeviceRates(gpu.memory_bandwidth_GB_per_s or 100.0, (flops or 10.0) * 1000, "assumed")


def disk_rates(cpu: DeviceRates, probes: Any | None) -> DeviceRates:
    """Blocks on disk are read every token and computed on the CPU: the disk's read rate (the model
    file's cold read, probed), else a stated default."""
    if probes is not None and probes.disk_read_GB_per_s:
        slowest = min(p.value for p in probes.disk_read_GB_per_s.values())
        return DeviceRates(slowest, cpu.matmul_GFLOP_per_s, "probe")
    return DeviceRates(_table()["disk_GB_per_s"], cpu.matmul_GFLOP_per_s, "assumed")


def default_efficiency() -> Efficiency:
    defaults = _table()
    return Efficiency(defaults["decode_efficiency"], defaults["prefill_efficiency"], "estimated")


def step_model(
    spec: ModelSpec, setup: Setup, weights: WeightBytes, hw: HardwareSpec, *,
    probes: MachineProbes | None = None, efficiency: Efficiency | None = None, published: bool = True,
) -> StepModel:
    """A plan's step-time model on `hw`, with the runtime's own placement of every tensor; GPUs use the
    runtime's terms fitted on published measurements (`published`), unless this machine calibrated it."""
    from fitplan.strategies.kv_cache import element_bytes
    from fitplan.strategies.registry import cost_model

    runtime = cost_model(setup.runtime)
    placed = runtime.place(spec, setup, weights)
    rates = {"cpu": cpu_rates(hw, setup.threads, probes, setup.weights)}
    if "disk" in placed:
        rates["disk"] = disk_rates(rates["cpu"], probes)
    for i, gpu in enumerate(hw.gpus):
        rates[f"gpu{i}"] = gpu_rates(gpu, probes.gpus[i] if probes and i < len(probes.gpus) else None)
    terms = {}
    if published and not (efficiency and efficiency.provenance == "calibrated"):  # this machine's run beats them
        terms = {f"gpu{i}": t for i, gpu in enumerate(hw.gpus) if (t := terms_for(setup.runtime, gpu)) is not None}
        for device in terms:  # fitted terms scale the rate the runtime's kernels can reach, not the spec figure
            gpu, rate = hw.gpus[int(device[3:])], rates[device]
            if rate.source == "spec sheet" and (tflops := kernel_tflops(gpu)):
                rates[device] = replace(rate, matmul_GFLOP_per_s=tflops * 1000)
    devices_of_layers = [runtime.layer_device(spec, setup, i) for i in range(spec.layers)]
    hops = sum(1 for a, b in zip(devices_of_layers, devices_of_layers[1:], strict=False) if a != b)
    return StepModel(spec, placed, {d: devices_of_layers.count(d) for d in placed},
                     attention_loads(spec, devices_of_layers, element_bytes(setup.kv_cache), setup.runtime),
                     rates, efficiency or default_efficiency(), terms,
                     type_class(setup.weights), setup.flash_attn, hops, _reads(spec, placed, 1),
                     _head_flops(spec, placed),
                     pcie_GB_per_s(hw.gpus[0]) if hw.gpus and setup.runtime == "llama.cpp" else None, setup.op_offload,
                     _dynamic_int8_calls_s(placed) if _dynamic_int8(setup) else 0.0)


def _dynamic_int8(setup: Setup) -> bool:
    from fitplan.strategies.quantization import is_dynamic_int8

    return setup.runtime == "transformers" and is_dynamic_int8(setup.weights, setup.runtime)


def _dynamic_int8_calls_s(placed: Placement) -> float:
    """torch's dynamic int8 quantizes each linear layer's input on every call: a fixed cost per call that
    the bytes read do not show (data/runtimes.toml, dynamic_int8_call_s), once per block linear a step."""
    calls = sum(1 for t, _ in placed.get("cpu", ()) if t.role == "block" and t.is_matrix)
    return calls * _table()["dynamic_int8_call_s"]


def plan_speed(
    spec: ModelSpec, setup: Setup, weights: WeightBytes, hw: HardwareSpec, *,
    probes: MachineProbes | None = None, efficiency: Efficiency | None = None, prompt_tokens: int = 512,
    published: bool = True,
) -> SpeedPrediction:
    """The speed of one plan on `hw` (see step_model)."""
    model = step_model(spec, setup, weights, hw, probes=probes, efficiency=efficiency, published=published)
    return predict(model, setup, prompt_tokens=min(prompt_tokens, setup.context))
