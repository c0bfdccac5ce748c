"""The runtime probe's calibration: best-of-N runs, the contention rule, what is cached and what is shown.

Every timing here is injected (runs, CPU samples, clocks): no test depends on this machine being
quiet, and none asserts how fast it is.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import fitplan.advisor.plans.verify_command as verify_command
import fitplan.profiles.probes as probes_module
from fitplan.advisor.models.model_files import gguf_spec
from fitplan.advisor.planner.calibration import (
    Calibration,
    CalibrationEntry,
    ProbeLimits,
    age_text,
    best_of,
    best_runs,
    fit_entry,
    load_calibration,
    refusal,
)
from fitplan.advisor.planner.solver import Request, advise
from fitplan.advisor.plans.verify_worker import timed_runs
from fitplan.profiles.named import load_profile
from fitplan.profiles.probes import CpuSample, MachineProbes, cpu_sample, fingerprint, others_cores

DAY = 86400.0


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty fitplan cache."""
    monkeypatch.setenv("FITPLAN_CACHE_DIR", str(tmp_path))
    return tmp_path


def runs(decode: list[float], prefill: list[float] | None = None) -> list[dict]:
    """Worker-shaped runs (128-token prompt, 16 generated) with these decode and prefill rates."""
    prefill = prefill or [200.0] * len(decode)
    return [{"prompt_tokens": 128, "generated": 16, "prefill_s": 128 / p, "ttft_s": 128 / p + 0.01,
             "decode_s": 15 / d, "first_tokens": [1] * 16} for d, p in zip(decode, prefill)]


def measured(decode: list[float], prefill: list[float] | None = None, others: float | None = 0.02,
             cpus: int = 2) -> dict:
    cpu = None if others is None else {"window_s": 5.0, "others_cores": others, "cpus": cpus}
    return {"load_s": 0.5, "runs": runs(decode, prefill), "peak_rss_bytes": 1, "baseline_rss_bytes": 1,
            "gpu_peak_bytes": {}, "cpu": cpu}


def entry(**changes: object) -> CalibrationEntry:
    fields = dict(decode=0.5, prefill=0.4, model="m", weights="Q4_1", threads=2, measured_decode_tokens_per_s=96.0,
                  measured_prefill_tokens_per_s=200.0, created_unix=1000.0, runs=8, kept=3, decode_spread=0.04,
                  prefill_spread=0.01, others_cores=0.05, cpus=2, probe_s=6.0)
    return CalibrationEntry.model_validate({**fields, **changes})


def test_best_of_keeps_the_fastest_runs_and_their_spread() -> None:
    """Contention only slows a run: the best 3 of 8 give the figure (their median) and the spread."""
    best = best_of([40.0, 96.0, 2.2, 92.0, 94.0, 50.0, 60.0, 70.0])
    assert (best.median, best.kept) == (94.0, 3)
    assert best.spread == pytest.approx((96 - 92) / 96)


def test_best_runs_take_decode_and_prefill_each_from_its_own_best() -> None:
    """A run whose prefill was disturbed can still give one of the best decode rates."""
    best = best_runs(runs([96, 95, 94, 20], [100, 210, 205, 200]))
    assert best["decode_tokens_per_s"].median == pytest.approx(95)
    assert best["prefill_tokens_per_s"].median == pytest.approx(205)
    assert best["prefill_tokens_per_s"].spread == pytest.approx(10 / 210)


def test_fit_entry_records_how_the_probe_was_judged(smollm2_gguf: str) -> None:
    """Efficiency = best runs' median / rate at efficiency 1; runs, spread and others' CPU use are kept."""
    at_one = SimpleNamespace(decode_tokens_per_s=200.0, prefill_tokens_per_s=400.0)  # predicted at efficiency 1
    spec = gguf_spec(smollm2_gguf)
    setup = verify_command.default_setup(spec, load_profile("laptop-cpu-16gb"), context=512, threads=2)
    fitted = fit_entry(spec, setup, at_one, measured([96, 90, 95, 30], others=0.4), probe_s=7.5, created_unix=5.0)
    assert fitted.decode == pytest.approx(95 / 200) and fitted.prefill == pytest.approx(200 / 400)
    assert (fitted.runs, fitted.kept, fitted.others_cores, fitted.cpus, fitted.probe_s) == (4, 3, 0.4, 2, 7.5)
    assert fitted.spread == pytest.approx(6 / 96)


def test_a_quiet_probe_is_cached() -> None:
    """Runs within 15% of each other, other processes under 15% of the CPUs: no reason to refuse."""
    assert refusal(entry()) is None
    assert refusal(entry(decode_spread=0.149, others_cores=0.29)) is None


def test_a_noisy_probe_says_why_in_one_line() -> None:
    """Each failed limit is named with its measured value and the limit, in one line."""
    why = refusal(entry(decode_spread=0.38, others_cores=0.9))
    assert why == "runs spread 38% (limit 15%) and other processes used 0.9 of 2 cores (limit 0.3)"
    assert refusal(entry(others_cores=1.0, cpus=2)) == "other processes used 1.0 of 2 cores (limit 0.3)"
    assert refusal(entry(runs=1, kept=1, decode_spread=0.0, prefill_spread=0.0, probe_s=41.0)) == \
        "only 1 run in 41 s (a spread needs 2)"


def test_a_sustained_load_is_caught_even_when_the_runs_agree() -> None:
    """The busy core of the incident slowed every run alike: a tight spread alone would cache 2.2 tok/s."""
    assert refusal(entry(decode_spread=0.02, others_cores=1.0)) is not None


def test_unknown_cpu_use_is_judged_by_the_spread_alone() -> None:
    """Where CPU times cannot be read (others_cores None) the spread still decides."""
    assert refusal(entry(others_cores=None, cpus=None)) is None
    assert refusal(entry(others_cores=None, cpus=None, prefill_spread=0.3)) == "runs spread 30% (limit 15%)"


def test_limits_are_a_parameter() -> None:
    """A caller (a test, a bench) can loosen or tighten the rule without touching the module."""
    assert refusal(entry(decode_spread=0.38), ProbeLimits(spread=0.5)) is None


def test_others_cores_is_machine_busy_time_minus_our_own() -> None:
    """(busy delta - own delta) / wall: 12 busy CPU-seconds, 7 ours, over 5 s = 1 core of others."""
    before, after = CpuSample(busy_s=100.0, own_s=10.0, cpus=2), CpuSample(busy_s=112.0, own_s=17.0, cpus=2)
    assert others_cores(before, after, 5.0) == pytest.approx(1.0)
    assert others_cores(before, CpuSample(busy_s=105.0, own_s=17.0, cpus=2), 5.0) == 0.0  # tick rounding
    assert others_cores(before, after, 0.0) == 0.0


def test_cpu_sample_reads_this_machine() -> None:
    """A real sample has at least one CPU and non-negative times (their size depends on the machine)."""
    sample = cpu_sample()
    assert sample is not None and sample.cpus >= 1 and sample.busy_s >= 0 and sample.own_s >= 0


class FakeClock:
    """A clock that only the fake run moves: each run takes `run_s` seconds."""

    def __init__(self, run_s: float, now: float = 0.0) -> None:
        self.run_s, self.now = run_s, now

    def __call__(self) -> float:
        return self.now

    def run(self) -> dict:
        self.now += self.run_s
        return {"ended": self.now}


def test_timed_runs_stop_before_the_budget() -> None:
    """3 s runs after 1 s of loading, a 9.5 s budget: runs end at 4 and 7 s; a third would end at 10."""
    clock = FakeClock(3.0, now=1.0)
    assert len(timed_runs(clock.run, repeat=8, budget_s=9.5, started=0.0, clock=clock)) == 2
    exact = FakeClock(3.0, now=1.0)
    assert len(timed_runs(exact.run, repeat=8, budget_s=10, started=0.0, clock=exact)) == 3  # ends at the budget
    slow = FakeClock(60.0)
    assert len(timed_runs(slow.run, repeat=8, budget_s=40, started=0.0, clock=slow)) == 1  # the first always runs
    free = FakeClock(60.0)
    assert len(timed_runs(free.run, repeat=3, budget_s=None, started=0.0, clock=free)) == 3  # verify --repeat


def test_a_calibration_of_the_old_schema_is_ignored(cache: Path) -> None:
    """A schema-1 file holds one unjudged run, maybe of a busy machine: it is not used."""
    old = {"schema_version": 1, "fingerprint": "ab", "entries": {"llama.cpp/cpu": {
        "decode": 0.02, "prefill": 0.3, "model": "m", "weights": "Q4_1", "threads": 2,
        "measured_decode_tokens_per_s": 2.2, "measured_prefill_tokens_per_s": 90.0, "created_unix": 1.0}}}
    (cache / "calibration-ab.json").write_text(json.dumps(old))
    assert load_calibration("ab").entries == {}


def test_age_text() -> None:
    """Ages read in the largest whole unit."""
    assert [age_text(s) for s in (5, 60, 7200, 3 * DAY + 5, DAY)] == \
        ["under a minute old", "1 minute old", "2 hours old", "3 days old", "1 day old"]


# -- calibrate_runtime and advise --probe, with the runs injected ------------------------------------


@pytest.fixture
def probe_runs(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The runtime probe's measurements come from this list (one per probe), not from a real run; the
    micro-probes measure nothing."""
    queue: list[dict] = []

    def fake_measure(spec, setup, **_kwargs) -> dict:
        return queue.pop(0)

    def no_probes(hw, **_kwargs) -> MachineProbes:
        return MachineProbes(fingerprint=fingerprint(hw), created_unix=0.0)

    monkeypatch.setattr(verify_command, "measure", fake_measure)
    monkeypatch.setattr(probes_module, "probes_or_cached", no_probes)
    return queue


def calibrate(smollm2_gguf: str) -> tuple[Calibration, str]:
    hw = load_profile("laptop-cpu-16gb")
    spec = gguf_spec(smollm2_gguf)
    chosen = advise(spec, hw, Request(runtime="llama.cpp", weights="Q4_1", threads=2)).chosen
    verify_command.calibrate_runtime(spec, chosen, hw, MachineProbes(fingerprint=fingerprint(hw), created_unix=0.0))
    return load_calibration(fingerprint(hw)), fingerprint(hw)


def test_a_noisy_probe_is_not_cached_and_a_cached_one_stays(smollm2_gguf: str, probe_runs: list[dict],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Noisy with nothing cached: one line, nothing written. Quiet: cached. Noisy again: the quiet one stays."""
    probe_runs.append(measured([96, 40, 60, 2.2, 70], others=0.9))
    calibration, _ = calibrate(smollm2_gguf)
    err = capsys.readouterr().err
    assert calibration.entries == {}
    assert err == ("calibration not cached: runs spread 38% (limit 15%) and other processes used 0.9 of 2 cores "
                   "(limit 0.3); speed stays uncalibrated (run advise --probe again on a quiet machine)\n")
    probe_runs.append(measured([96, 95, 94, 80, 93], others=0.05))
    calibration, _ = calibrate(smollm2_gguf)
    quiet = calibration.entries["llama.cpp/cpu"]
    assert capsys.readouterr().err == "" and quiet.measured_decode_tokens_per_s == pytest.approx(95)
    probe_runs.append(measured([2.2, 2.1, 2.2], others=1.0))
    calibration, _ = calibrate(smollm2_gguf)
    assert calibration.entries["llama.cpp/cpu"] == quiet
    assert capsys.readouterr().err.endswith("; the cached llama.cpp/cpu calibration (under a minute old) stays\n")


def test_advise_probe_answers_when_noisy_and_shows_a_quiet_calibration(
        smollm2_gguf: str, probe_runs: list[dict], capsys: pytest.CaptureFixture[str]) -> None:
    """--probe re-runs every time: noisy answers estimated (exit 0, one stderr line), quiet answers calibrated
    with the calibration's age and spread in the JSON and the table."""
    from fitplan.advisor.cli.commands import advise_main

    def advise_probe(*extra: str) -> tuple[str, str]:
        with pytest.raises(SystemExit) as exit_info:
            advise_main([smollm2_gguf, "--weights", "Q4_1", "--threads", "1", "--max-vram", "0GB", "--probe", *extra])
        assert exit_info.value.code == 0
        return capsys.readouterr()

    probe_runs.append(measured([96, 40, 60], others=0.9))
    out, err = advise_probe("--json")
    assert json.loads(out)["predicted"]["provenance"]["speed"] == "estimated"
    assert err.count("\n") == 1 and err.startswith("calibration not cached: runs spread 58% (limit 15%)")
    probe_runs.append(measured([96, 95, 92], others=0.0))
    out, err = advise_probe("--json")
    provenance = json.loads(out)["predicted"]["provenance"]
    assert provenance["speed"] == "calibrated" and err == ""
    note = provenance["calibration"]
    assert (note["key"], note["runs"], note["kept"], note["spread"]) == ("llama.cpp/cpu", 3, 3, round(4 / 96, 4))
    assert note["summary"] == "this machine, under a minute old, spread 4%"
    probe_runs.append(measured([96, 95, 92], others=0.0))
    out, _ = advise_probe()
    assert "speed (calibrated (this machine, under a minute old, spread 4%); " in " ".join(out.split())


def test_figures_show_the_calibration_age_and_spread(smollm2_gguf: str) -> None:
    """A 3-day-old calibration with a 4% spread says so in the JSON provenance and the table."""
    from rich.console import Console

    from fitplan.advisor.cli.report import render
    from fitplan.advisor.planner.document import advice_document, predicted_dict

    hw, spec = load_profile("gha-ubuntu-4core"), gguf_spec(smollm2_gguf)
    calibration = Calibration(fingerprint="ab", entries={"llama.cpp/cpu": entry(created_unix=1000.0)})
    advice = advise(spec, hw, Request(runtime="llama.cpp", weights="Q4_1"), calibration=calibration)
    note = predicted_dict(advice.chosen, calibration, now=1000.0 + 3 * DAY + 60)["provenance"]["calibration"]
    assert note["summary"] == "this machine, 3 days old, spread 4%" and note["age_s"] == 3 * DAY + 60
    doc = advice_document(spec, hw, advice, calibration=calibration)
    assert doc["predicted"]["provenance"]["speed"] == "calibrated"  # the existing field, unchanged
    console = Console(file=io.StringIO(), width=300)
    render(doc, console)
    assert "speed (calibrated (this machine, " in console.file.getvalue()
    uncalibrated = advice_document(spec, hw, advise(spec, hw, Request(runtime="llama.cpp", weights="Q4_1")))
    assert "calibration" not in uncalibrated["predicted"]["provenance"]
