"""Fixtures: the hardware in force, plans, metered models, timers and measured blocks."""
from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from fitplan.plugin.measure import PeakMeter, PeakResult
from fitplan.plugin.state import SETTINGS_KEY, TestRecord, record_for

if TYPE_CHECKING:
    from fitplan.hardware_spec import HardwareSpec
    from fitplan.plan_spec import Setup
    from fitplan.strategies.runtimes.contract import TimedModel


def settings_of(config: pytest.Config) -> Any:
    return config.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def fitplan_hardware(pytestconfig: pytest.Config) -> Any:
    """The HardwareSpec in force: --fitplan-hardware / FITPLAN_HARDWARE / ini, else this machine."""
    from fitplan.advisor.budgets.predicted import hardware

    return hardware(settings_of(pytestconfig).hardware or "auto")


@pytest.fixture(scope="session")
def fitplan_plan(fitplan_hardware: HardwareSpec) -> Callable[..., dict[str, Any]]:
    """Factory: fitplan_plan("smollm2-135m", context=2048) -> the advise document on the hardware in force."""
    from fitplan.advisor.models.catalog import catalog_spec
    from fitplan.advisor.models.resolve import resolve_model
    from fitplan.advisor.planner.document import advice_document
    from fitplan.advisor.planner.solver import Request, advise

    def plan(model: str, **pins: Any) -> dict[str, Any]:
        if catalog_spec(model) is None and "/" in model and not os.path.exists(model):
            raise ValueError(f"fitplan_plan({model!r}): catalog names or local files only in tests")
        spec = resolve_model(model)
        from fitplan.advisor.budgets.predicted import speed_context

        probes, calibration = speed_context(fitplan_hardware)
        advice = advise(spec, fitplan_hardware, Request(**pins), probes=probes, calibration=calibration)
        return advice_document(spec, fitplan_hardware, advice)

    return plan


class Meter:
    """Tokens and seconds a test reports; min_tokens_per_s checks their ratio."""

    def __init__(self, record: TestRecord) -> None:
        self._record = record

    def record(self, tokens: int, seconds: float) -> None:
        if tokens < 0 or seconds <= 0:
            raise ValueError(f"fitplan_meter.record({tokens}, {seconds}): tokens >= 0 and seconds > 0")
        self._record.tokens += tokens
        self._record.token_seconds += seconds

    @property
    def tokens_per_s(self) -> float | None:
        return self._record.tokens_per_s


@pytest.fixture
def fitplan_meter(request: pytest.FixtureRequest) -> Meter:
    """fitplan_meter.record(tokens, seconds): throughput for @pytest.mark.min_tokens_per_s."""
    return Meter(record_for(request.node))


@dataclass(frozen=True)
class Timing:
    samples: tuple[float, ...]  # seconds per call, warm-up excluded

    def percentile(self, p: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)


def _synchronize() -> None:
    """Wait for queued GPU work, where torch with CUDA is in use, so a sample covers the kernels."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@pytest.fixture
def fitplan_timer(request: pytest.FixtureRequest) -> Callable[..., Timing]:
    """fitplan_timer(fn, repeat=20, warmup=2) -> Timing; the samples feed @pytest.mark.max_latency."""
    record = record_for(request.node)

    def timer(fn: Callable[[], Any], repeat: int = 20, warmup: int = 2) -> Timing:
        if repeat < 1 or warmup < 0:
            raise ValueError(f"fitplan_timer(repeat={repeat}, warmup={warmup}): repeat >= 1, warmup >= 0")
        for _ in range(warmup):
            fn()
        _synchronize()
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            _synchronize()
            samples.append(time.perf_counter() - start)
        record.timer_samples.extend(samples)
        return Timing(tuple(samples))

    return timer


class Budget:
    """`with fitplan_budget.measure() as m:` gives the block's peak RAM/VRAM and seconds."""

    @contextmanager
    def measure(self) -> Iterator[Measured]:
        meter, measured = PeakMeter(), Measured()
        meter.start()
        try:
            yield measured
        finally:
            measured.result = meter.stop()


class Measured:
    result: PeakResult | None = None

    @property
    def peak_ram_bytes(self) -> int | None:
        return self.result.ram_total_bytes if self.result else None

    @property
    def peak_vram_bytes(self) -> int | None:
        return self.result.vram_bytes if self.result else None

    @property
    def seconds(self) -> float | None:
        return self.result.seconds if self.result else None


@pytest.fixture
def fitplan_budget() -> Budget:
    """Measure a block: `with fitplan_budget.measure() as m: ...; m.peak_ram_bytes`."""
    return Budget()


class ModelHandle:
    """A model loaded as planned; every run is metered into the current test."""

    def __init__(self, loaded: TimedModel, setup: Setup) -> None:
        self.loaded, self.setup = loaded, setup
        self.record: TestRecord | None = None

    def run(self, prompt_tokens: int = 64, gen_tokens: int = 32) -> Any:
        timing = self.loaded.run(prompt_tokens, gen_tokens)
        if self.record is not None and timing.generated > 1:
            self.record.tokens += timing.generated - 1
            self.record.token_seconds += timing.decode_s
        return timing


@pytest.fixture(scope="session")
def _fitplan_loaded_models() -> Iterator[dict[Any, ModelHandle]]:
    cache: dict[Any, ModelHandle] = {}
    yield cache
    for handle in cache.values():
        handle.loaded.close()


@pytest.fixture
def fitplan_model(request: pytest.FixtureRequest, _fitplan_loaded_models: dict[Any, ModelHandle]) -> Callable[..., ModelHandle]:
    """Factory: fitplan_model(path, runtime=..., weights=..., context=..., threads=...) loads once per
    session and meters decode tokens/s into the test (for @pytest.mark.min_tokens_per_s)."""

    def load(model: str, **pins: Any) -> ModelHandle:
        key = (model, tuple(sorted(pins.items())))
        if key not in _fitplan_loaded_models:
            _fitplan_loaded_models[key] = _load(model, pins)
        handle = _fitplan_loaded_models[key]
        handle.record = record_for(request.node)
        return handle

    return load


def _load(model: str, pins: dict[str, Any]) -> ModelHandle:
    from fitplan.advisor.models.resolve import resolve_model
    from fitplan.advisor.plans.verify import model_source
    from fitplan.advisor.plans.verify_command import default_setup
    from fitplan.errors import RuntimeMissingError
    from fitplan.profiles.detect import detect
    from fitplan.strategies.registry import executor

    spec = resolve_model(model)
    setup = default_setup(spec, detect(), **pins)
    runtime = executor(setup.runtime)
    missing = runtime.missing()
    if missing:
        raise RuntimeMissingError(f"cannot run {setup.runtime}: {missing}")
    source = model_source(spec)
    prepare = getattr(runtime, "prepare", None)
    return ModelHandle(runtime.open(prepare(source) if prepare else source, setup, layers=spec.layers), setup)
