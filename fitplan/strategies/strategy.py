"""What a strategy is: named options, each with its requirements, its effects and how it runs.

Built-in strategies (quantization, offload, pruning, attention, speculative decoding, KV-cache
precision, batching, runtimes) and third-party ones register through the same hook
(`fitplan_register_strategies`, strategies/hookspecs.py); the solver asks them which options a
machine can run and why not.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fitplan.hardware_spec import HardwareSpec

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True)
class Requirement:
    """Where an option can run. Packages are what executing it needs; a named profile cannot say
    whether they are installed, so only `missing_packages` (this machine) checks them."""

    devices: tuple[str, ...] = ("cpu", "gpu")
    gpu_vendors: tuple[str, ...] = ()  # empty: any vendor
    min_compute_capability: float | None = None  # NVIDIA compute capability
    runtimes: tuple[str, ...] = ()  # empty: any runtime
    packages: tuple[str, ...] = ()  # import names
    source: str = ""

    def unmet(self, hardware: HardwareSpec, device: str, runtime: str | None = None) -> str | None:
        """Why this option cannot run on `device` ("cpu" or "gpu") of `hardware`, or None."""
        if runtime is not None and self.runtimes and runtime not in self.runtimes:
            return f"runs on {' / '.join(self.runtimes)} only"
        if device not in self.devices:
            return f"runs on {' / '.join(d.upper() for d in self.devices)} only"
        if device == "gpu":
            if not hardware.gpus:
                return "needs a GPU"
            return self._gpu_unmet(hardware)
        return None

    def _gpu_unmet(self, hardware: HardwareSpec) -> str | None:
        for gpu in hardware.gpus:
            if self.gpu_vendors and gpu.vendor not in self.gpu_vendors:
                return f"needs an {' / '.join(v.upper() for v in self.gpu_vendors)} GPU ({gpu.name} is {gpu.vendor})"
            if self.min_compute_capability is not None:
                have = _capability(gpu.compute_capability)
                if have is None or have < self.min_compute_capability:
                    return (f"needs compute capability >= {self.min_compute_capability:.1f} "
                            f"({gpu.name}: {gpu.compute_capability or 'unknown'})")
        return None

    def missing_packages(self) -> list[str]:
        """The packages this machine lacks to execute the option (a cheap find_spec, no import)."""
        from importlib.util import find_spec

        return [name for name in self.packages if find_spec(name) is None]


def _capability(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Option:
    """One choice of a strategy: what it needs, what it changes, how a runtime executes it."""

    strategy: str
    name: str
    requirement: Requirement
    effects: dict[str, Any] = field(default_factory=dict)  # memory / speed / quality, each with a source
    execute: str = ""  # the runtime's own setting that carries it out


class Strategy(Protocol):
    """A technique the solver may combine with others."""

    @property
    def name(self) -> str: ...

    @property
    def summary(self) -> str: ...

    def options(self) -> list[Option]:
        """Every option, built from the strategy's data file (read lazily)."""


@dataclass(frozen=True)
class TableStrategy:
    """A strategy whose options come from a function over its data table (the built-ins)."""

    name: str
    summary: str
    build: Any  # () -> list[Option]

    def options(self) -> list[Option]:
        return self.build()


def option_of(strategy: Strategy, name: str) -> Option:
    """One of a strategy's own options by name (a technique module asking about itself needs no registry)."""
    return next(o for o in strategy.options() if o.name == name)


def requirement_from(row: dict[str, Any], **defaults: object) -> Requirement:
    """A Requirement from a strategies.toml row; `defaults` fill what the row leaves out."""
    fields = ("devices", "gpu_vendors", "min_compute_capability", "runtimes", "packages", "source")
    values = {**defaults, **{k: row[k] for k in fields if k in row}}
    return Requirement(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()})  # type: ignore[arg-type]


def table_options(strategy: str, section: str, effects: Callable[[str], dict[str, Any]] | None = None) -> list[Option]:
    """The options of `section` in data/strategies.toml; effects(name) adds each one's effects."""
    from fitplan.datafiles import load_table

    rows = load_table("fitplan.strategies.data", "strategies.toml")[section]
    return [Option(strategy, name, requirement_from(row), effects(name) if effects else {}, row.get("execute", ""))
            for name, row in rows.items()]
