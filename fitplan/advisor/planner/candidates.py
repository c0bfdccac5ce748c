"""What the solver weighs and answers: the request, each candidate plan, and the advice."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fitplan.plan_spec import DeviceMemory, Setup
from fitplan.strategies.quantization import WeightFormat

if TYPE_CHECKING:
    from fitplan.advisor.planner.quality import MeasuredQuality
    from fitplan.advisor.planner.speed import SpeedPrediction
    from fitplan.strategies.runtimes.vllm.cost import ScaleOut


@dataclass(frozen=True)
class Request:
    """What the user asked for: pins are None when free."""

    context: int | None = None
    batch: int = 1
    threads: int | None = None
    runtime: str | None = None
    weights: str | None = None
    kv_cache: str | None = None
    max_vram: int | None = None  # bytes per GPU
    reserve: int | None = None  # bytes every plan leaves free on each GPU; None: the default (runtimes.toml)
    max_ram: int | None = None
    gpu_layers: int | None = None  # pin the blocks on the GPUs (0: CPU only); None: the solver places them
    objective: str = "balanced"
    flash_attn: bool | None = None  # None: on for llama.cpp (exact attention, less memory); off for transformers (SDPA)
    swa_full: bool | None = None  # llama.cpp's sliding-window cache at full size; None: the executor's default (on)
    op_offload: bool | None = None  # llama.cpp's op offload of CPU layers' prompt batches; None: its default (on)
    draft: str | None = None  # speculative decoding: a draft model (catalog name or local file) or "prompt-lookup"
    acceptance: float | None = None  # the draft's acceptance rate; None: the stated default
    acceptance_source: str | None = None  # how the rate was obtained, e.g. by the acceptance probe
    draft_tokens: int | None = None  # tokens the draft proposes per step
    min_tokens_per_s: float | None = None
    max_ttft_s: float | None = None
    max_ppl_increase: float | None = None
    max_kld: float | None = None  # mean KL divergence at most: needs a measured figure (fitplan quality)
    measured: Mapping[str, MeasuredQuality] | None = None  # this model's measured formats, by name
    prune: str | None = None  # "2:4" or "unstructured:RATIO": pinned only, the solver never proposes it
    disk_layers: int | None = None  # transformers: keep the last N blocks on disk (accelerate offload); pinned only


@dataclass
class Candidate:
    setup: Setup
    fmt: WeightFormat
    memory: dict[str, DeviceMemory]
    fits: bool
    layers: int
    reason: str = ""
    speed: SpeedPrediction | None = None  # attached by advisor/planner/estimate.py
    speculation: dict[str, Any] | None = None  # the draft, its acceptance and the speed-up, when asked for
    source_loss: float = 0.0  # a quantized source file's own loss: converting it cannot undo it
    converted: bool = False  # the weights must be converted or downloaded (not the files at hand)
    split_by: str = ""  # unequal GPUs: "memory" (llama.cpp's default shares) or "speed" (the fastest card filled first)

    def timed(self) -> SpeedPrediction:
        """Its speed, which every fitting candidate has once the solver timed it."""
        assert self.speed is not None, f"{self.label} was not timed"
        return self.speed

    @property
    def placement(self) -> str:
        if self.setup.disk_layers:
            return "disk"
        if self.setup.gpu_layers == 0:
            return "cpu"
        if self.setup.layer_map:
            return "exact"
        if self.setup.cpu_moe_layers:
            return "experts-cpu"
        return "gpu" if self.setup.gpu_layers == self.layers else "split"

    @property
    def label(self) -> str:
        where = {"cpu": "CPU", "gpu": "GPU", "split": f"{self.setup.gpu_layers} layers on GPU, rest on CPU",
                 "disk": f"{self.setup.disk_layers} layers on disk, {self.setup.gpu_layers} on GPU, rest on CPU",
                 "experts-cpu": f"GPU, experts of {self.setup.cpu_moe_layers} layers on CPU",
                 "exact": f"exact placement: {sum(d == 'cpu' for d in self.setup.layer_map)} blocks and "
                          f"{sum(d == 'cpu' for d in self.setup.expert_map)} expert sets on CPU"}
        shares = f"; layers split {self.split_by and f'by {self.split_by} '}{self.gpu_shares}" if self.setup.tensor_split else ""
        return f"{self.setup.runtime} {self.fmt.name} ({where[self.placement]}{shares})"

    @property
    def gpu_layer_counts(self) -> list[int]:
        """The offloaded layer slots (blocks, and the head on the last) each GPU holds under the tensor split."""
        from fitplan.strategies.runtimes.llamacpp.cost import layer_counts

        return layer_counts(self.layers, self.setup.gpu_layers, self.setup.tensor_split)

    @property
    def gpu_shares(self) -> str:
        """The same, as the label and tables print it, e.g. "27+54"."""
        return "+".join(map(str, self.gpu_layer_counts))


@dataclass
class Advice:
    chosen: Candidate
    fits: bool
    alternatives: list[Candidate] = field(default_factory=list)
    rejected: list[Candidate] = field(default_factory=list)
    context_note: str = ""
    scale_out: ScaleOut | None = None  # where nothing fits: the fewest GPUs that would hold it (vLLM)
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (format, why this machine cannot run it)
    gpu_reserve_bytes: int = 0  # what every plan left free on each GPU
