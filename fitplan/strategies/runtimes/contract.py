"""The runtime contract: what the planner asks of a runtime (CostModel) and what runs a plan on it
(Executor). Both are registered through the `fitplan_register_runtimes` hook (strategies/hookspecs.py);
the built-in runtimes implement them exactly as a third-party package does.

A runtime needs a CostModel to be planned for (`advise --runtime NAME`) and an Executor to be run
(`fitplan run`, `fitplan.load`, `verify`, `export`); vLLM and TensorRT-LLM register executors only
(servers fitplan starts; vLLM's multi-GPU sizing is the planner's scale-out).
"""
from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from fitplan.plan_spec import DeviceMemory, ModelSource, RunTarget, RunTiming, Setup, WeightBytes

if TYPE_CHECKING:
    from fitplan.hardware_spec import HardwareSpec
    from fitplan.model_spec import ModelSpec, TensorInfo
    from fitplan.strategies.quantization import WeightFormat

# what a cost model may offer beyond all blocks on the GPUs or all on the CPU (the offload strategy's options)
SPLIT, EXPERTS_CPU, EXACT, DISK = "split", "experts-cpu", "exact", "disk"
PRUNE = "prune"  # weights pruned at load (strategies/pruning.py)
KV_FALLBACK = "kv-fallback"  # a plan that overflows is retried with the cost model's `smaller_kv_cache`
UNEVEN = "uneven"  # layers shared over unequal GPUs by Setup.tensor_split (llama.cpp --tensor-split)


@runtime_checkable
class CostModel(Protocol):
    """Where a runtime puts every byte of a plan, and the choices it makes by default.

    Pure functions of (model, setup, weight bytes): the solver sizes hundreds of candidates with them."""

    name: str  # the name plans use, e.g. "llama.cpp"
    aliases: tuple[str, ...]  # other spellings --runtime accepts
    kv_cache_types: tuple[str, ...]  # the KV cache element types it offers (kv_dtypes.toml)
    features: frozenset[str]  # SPLIT, EXPERTS_CPU, EXACT, DISK, PRUNE, KV_FALLBACK: what the solver may try
    preallocates_kv: bool  # the KV cache is allocated whole at load (llama.cpp), not grown per token (transformers)
    smaller_kv_cache: str  # KV_FALLBACK: the type to retry with ("" without that feature)
    # weight formats this runtime brings, rows in formats.toml's shape (the built-ins keep theirs there)
    formats: Mapping[str, Mapping[str, Any]]
    # the runtime strategy's option for a third-party runtime, in strategies.toml's row shape (packages,
    # execute, source, devices...); the built-ins keep theirs in strategies.toml
    strategy_row: Mapping[str, Any]

    def constants(self) -> Mapping[str, Any]:
        """Its measured process and buffer constants (data/runtimes.toml)."""

    def layer_device(self, spec: ModelSpec, setup: Setup, layer: int) -> str:
        """The device block `layer` is stored on: "cpu", "gpuN" or "disk"."""

    def place(self, spec: ModelSpec, setup: Setup, weights: WeightBytes) -> dict[str, list[tuple[TensorInfo, int]]]:
        """Every weight tensor on its device."""

    def memory(self, spec: ModelSpec, setup: Setup, weights: WeightBytes,
               prompt_tokens: int | None = None) -> dict[str, DeviceMemory]:
        """Bytes per device; `prompt_tokens` None is the worst case, a prompt that fills the context."""

    def default_kv_cache(self, fmt: WeightFormat, hw: HardwareSpec, gpu_layers: int) -> str:
        """The KV cache type of an unpinned plan."""

    def flash_attn(self, wanted: bool | None, kv_cache: str, hw: HardwareSpec, all_on_gpu: bool) -> bool:
        """Whether the plan runs fused attention (`wanted` None: the runtime's default); raises
        BadValueError for a combination it cannot run."""

    def flash_attn_unmet(self, hw: HardwareSpec) -> str:
        """Why a pinned --flash-attn cannot run on `hw` ('' when it can)."""

    def refuse(self, setup: Setup) -> str:
        """Why this runtime cannot execute `setup` ('' when it can): the plan file's check."""


class TimedModel(Protocol):
    """A loaded model `fitplan verify` times (greedy, no sampling)."""

    def run(self, prompt_tokens: int, gen_tokens: int) -> RunTiming: ...

    def close(self) -> None: ...


class Session(Protocol):
    """A loaded model `fitplan run` and `fitplan.load` generate with (advisor/plans/handle.py)."""

    def count_tokens(self, text: str, *, prompt: bool) -> int: ...

    def stream(self, prompt: str, max_tokens: int) -> Generator[tuple[str, int], None, None]:
        """(text piece, tokens it stands for), greedy; closing the iterator stops generation."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class ServeCommand:
    """A server's command line, and the model name its clients ask for."""

    args: list[str]
    model: str


@runtime_checkable
class Executor(Protocol):
    """Runs plans on a real runtime; nothing heavy is imported before a model is opened."""

    name: str
    exports: tuple[str, ...]  # the `fitplan export --to` forms it writes (e.g. "python", "shell")

    def missing(self) -> str | None:
        """Why this runtime cannot run here (a package absent, no GPU), in one line; None when it can."""

    def prepare(self, source: ModelSource) -> ModelSource:
        """Weights this runtime can load from `source` (e.g. a GGUF converted once into a cached folder)."""

    def open(self, source: ModelSource, setup: Setup, *, layers: int) -> TimedModel:
        """Load `source` as `setup` says, for timed runs (verify)."""

    def session(self, target: RunTarget) -> Session:
        """Load a plan's model for generation."""

    def serve(self, target: RunTarget, *, port: int, host: str) -> ServeCommand:
        """The runtime's own OpenAI-compatible server for a plan (`fitplan run --serve`); raises
        RuntimeMissingError or BadValueError in one line when it cannot serve this plan."""

    def export(self, target: RunTarget, to: str, *, max_tokens: int, port: int) -> str:
        """The plan as one of `exports`: a standalone script or command line that loads and generates
        as the session does."""


class ModuleCostModel:
    """A CostModel whose functions are those of a module (how the built-ins are written: pure functions
    in strategies/runtimes/<runtime>/cost.py, named as the protocol names them)."""

    formats: Mapping[str, Mapping[str, Any]] = {}  # the built-ins' formats are formats.toml's rows
    strategy_row: Mapping[str, Any] = {}  # and their options strategies.toml's [runtime.*] rows

    def __init__(self, module: ModuleType, *, aliases: tuple[str, ...], features: frozenset[str],
                 preallocates_kv: bool, smaller_kv_cache: str = "") -> None:
        self.name: str = module.RUNTIME
        self.aliases, self.features = aliases, features
        self.preallocates_kv, self.smaller_kv_cache = preallocates_kv, smaller_kv_cache
        for function in ("constants", "layer_device", "place", "memory", "default_kv_cache", "flash_attn",
                         "flash_attn_unmet", "refuse"):
            setattr(self, function, getattr(module, function))

    @property
    def kv_cache_types(self) -> tuple[str, ...]:
        from fitplan.strategies.kv_cache import offered_kv_types

        return offered_kv_types(self.name)


def is_cost_model(item: object) -> bool:
    return isinstance(item, CostModel)


def is_executor(item: object) -> bool:
    return isinstance(item, Executor)
