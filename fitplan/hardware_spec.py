"""What the cost models know about a machine: GPUs, CPU, RAM, disk.

Named profiles (fitplan/profiles/data/*.toml) and detection both produce a HardwareSpec; it is
validated with pydantic because profile files are user input.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fitplan.plan_spec import MAX_THREADS

MAX_MEMORY_BYTES = 2**50  # 1 PiB per device: a profile claiming more is a typo or hostile, not a machine


class GPUSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    vendor: str = "nvidia"
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
    gpus: tuple[GPUSpec, ...] = ()
    cpu: CPUSpec
    ram_bytes: int = Field(gt=0, le=MAX_MEMORY_BYTES)
    ram_available_bytes: int | None = Field(default=None, ge=0, le=MAX_MEMORY_BYTES)  # detected machines only
    disk_free_bytes: int | None = Field(default=None, ge=0)
    detected: bool = False
    sources: tuple[str, ...] = ()
    notes: str = ""

    @property
    def ram_usable_bytes(self) -> int:
        return self.ram_available_bytes if self.ram_available_bytes is not None else self.ram_bytes
