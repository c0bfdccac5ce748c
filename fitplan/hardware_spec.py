"""What the cost models know about a machine: GPUs, CPU, RAM, disk.

Named profiles (fitplan/profiles/data/*.toml) and detection both produce a HardwareSpec; it is
validated with pydantic because profile files are user input.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from fitplan.plan_spec import MAX_THREADS

MAX_MEMORY_BYTES = 2**50  # 1 PiB per device: a profile claiming more is a typo or hostile, not a machine
MAX_GPUS = 64  # per host: more is a typo (and a placement nobody runs on one host)
# the llama.cpp/ggml GPU backends a profile may name, and the one each vendor runs by default
BACKENDS = ("CUDA", "ROCm", "Metal", "Vulkan", "SYCL")
_BACKEND_ALIASES = {"hip": "ROCm"}
VENDOR_BACKENDS = {"nvidia": "CUDA", "amd": "ROCm", "apple": "Metal", "intel": "SYCL"}


class GPUSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    vendor: str = "nvidia"
    # the runtime's GPU backend: the speed model's terms are keyed by it (strategies/speed_terms.py)
    backend: str = Field(default="", validate_default=True)
    memory_bytes: int = Field(gt=0, le=MAX_MEMORY_BYTES)
    free_memory_bytes: int | None = Field(default=None, ge=0, le=MAX_MEMORY_BYTES)  # detected machines only
    memory_bandwidth_GB_per_s: float | None = Field(default=None, gt=0)
    fp16_tflops: float | None = Field(default=None, gt=0)
    bf16_tflops: float | None = Field(default=None, gt=0)
    int8_tops: float | None = Field(default=None, gt=0)
    compute_capability: str | None = None
    pcie_gen: int | None = Field(default=None, gt=0)
    pcie_lanes: int | None = Field(default=None, gt=0)
    unified_memory: bool = False
    # the board's power limit (TDP/TGP) from its spec sheet: a long GEMM runs at the power limit, so
    # prefill rates follow it where the tensor peak is out of reach (speed_terms.py)
    board_power_W: float | None = Field(default=None, gt=0)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str, info: ValidationInfo) -> str:
        """A named backend, in its canonical spelling; unnamed, the vendor's own (CUDA on NVIDIA...)."""
        if not value:
            vendor = str(info.data.get("vendor", "")).lower()
            if vendor not in VENDOR_BACKENDS:
                raise ValueError(f"vendor {vendor!r} has no default backend: name one of {', '.join(BACKENDS)}")
            return VENDOR_BACKENDS[vendor]
        known = {b.lower(): b for b in BACKENDS} | _BACKEND_ALIASES
        if value.lower() not in known:
            raise ValueError(f"unknown backend {value!r}; known: {', '.join(BACKENDS)} (HIP is ROCm)")
        return known[value.lower()]

    @property
    def usable_bytes(self) -> int:
        """What a plan may use: free memory where it was measured, else the whole card."""
        return self.free_memory_bytes if self.free_memory_bytes is not None else self.memory_bytes


class CPUSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    cores: int = Field(gt=0, le=MAX_THREADS)
    threads: int = Field(gt=0, le=MAX_THREADS)
    memory_bandwidth_GB_per_s: float | None = Field(default=None, gt=0)
    flags: tuple[str, ...] = ()


class HardwareSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    description: str = ""
    gpus: tuple[GPUSpec, ...] = Field(default=(), max_length=MAX_GPUS)
    cpu: CPUSpec
    ram_bytes: int = Field(gt=0, le=MAX_MEMORY_BYTES)
    ram_available_bytes: int | None = Field(default=None, ge=0, le=MAX_MEMORY_BYTES)  # detected machines only
    disk_free_bytes: int | None = Field(default=None, ge=0)
    detected: bool = False
    sources: tuple[str, ...] = ()
    notes: str = ""
    # what the machine cost new, where a source gives it: dated, since prices move (fitplan hardware --for)
    price_usd: float | None = Field(default=None, gt=0)
    price_date: str = ""
    price_source: str = ""

    @model_validator(mode="after")
    def _dated_price(self) -> HardwareSpec:
        if self.price_usd is not None and not (self.price_date and self.price_source):
            raise ValueError("price_usd needs price_date and price_source (prices move; say when and where)")
        return self

    @property
    def unified(self) -> bool:
        """GPUs that share the host's RAM (Apple silicon, DGX Spark, Strix Halo): one pool for both."""
        return any(g.unified_memory for g in self.gpus)

    @property
    def ram_usable_bytes(self) -> int:
        return self.ram_available_bytes if self.ram_available_bytes is not None else self.ram_bytes
