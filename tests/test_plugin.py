"""The pytest plugin, run as a user runs it: a test file in a fresh directory, pytest in a subprocess.

Each case writes a small test file with `pytester`, runs pytest in a subprocess (so the `pytest11`
entry point loads the plugin, as in a user's repo) and reads the outcomes, the terminal summary,
the JSON report (--fitplan-report) or the JUnit XML. Predicted figures come from catalog models on
named hardware profiles (offline); measured ones from what the inner tests allocate or sleep.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

INNER_FILE = "test_budgets"  # the inner tests' node ids are test_budgets.py::<name>
HEADER = "import pytest\n\n"
ALLOCATE_100MB = """
def allocate(n=100_000_000):
    data = bytearray(n)
    data[::4096] = b"\\x01" * len(range(0, n, 4096))
    return data  # every page written: resident whatever the allocator does
"""
HEAVY_MODULES = ("torch", "transformers", "numpy", "pydantic", "rich", "pynvml", "scipy", "gguf")


@dataclass
class Run:
    result: pytest.RunResult
    budgets: list[dict[str, Any]]  # the JSON report's rows

    def row(self, test: str) -> dict[str, Any]:
        """The one budget row of inner test `test` (function name)."""
        rows = [r for r in self.budgets if r["test"] == f"{INNER_FILE}.py::{test}"]
        assert len(rows) == 1, (test, self.budgets)
        return rows[0]

    def verdicts(self) -> list[tuple[str, str, bool, str]]:
        return sorted((r["test"], r["kind"], r["passed"], r["where"]) for r in self.budgets)


@pytest.fixture(autouse=True)
def _inner_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inner pytest sees no FITPLAN_HARDWARE from outside, and a terminal wide enough for whole lines."""
    monkeypatch.delenv("FITPLAN_HARDWARE", raising=False)
    monkeypatch.setenv("COLUMNS", "400")  # the short summary cuts its lines at the terminal width


def run_budgets(pytester: pytest.Pytester, source: str, *args: str) -> Run:
    """Write `source` (with `import pytest`) as the inner test file, run it, read the JSON report."""
    pytester.makepyfile(**{INNER_FILE: HEADER + textwrap.dedent(source)})
    report = pytester.path / "fitplan-report.json"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-ra", "--fitplan-report", str(report), *args)
    budgets = json.loads(report.read_text())["budgets"] if report.exists() else []
    return Run(result, budgets)


def with_allocate(source: str) -> str:
    """`source` (indented or not) after the allocate() helper."""
    return ALLOCATE_100MB + textwrap.dedent(source)


def pass_and_fail(decorator: str, body: str, passing: str, failing: str, prelude: str = "") -> str:
    """An inner file with test_pass and test_fail: the same body under two limits of one marker."""
    indented = textwrap.indent(textwrap.dedent(body).strip(), "    ")
    tests = [f"@pytest.mark.{decorator.format(limit=limit)}\ndef test_{name}({_fixtures(body)}):\n{indented}\n"
             for name, limit in (("pass", passing), ("fail", failing))]
    return textwrap.dedent(prelude) + "\n\n" + "\n\n".join(tests)


def _fixtures(body: str) -> str:
    return ", ".join(f for f in ("fitplan_timer", "fitplan_meter", "fitplan_budget") if f in body)


# ---------------------------------------------------------------------------------------------
# each marker, measured and predicted, passing and failing

MEASURED_RAM_CASES = {
    "python": ("data = allocate()", ALLOCATE_100MB),
    "ctypes": ("""
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        block = libc.malloc(100_000_000)
        libc.memset(ctypes.c_void_p(block), 1, 100_000_000)
        libc.free(ctypes.c_void_p(block))
        """, "import ctypes"),
    "numpy": ("data = numpy.ones(12_500_000)  # 100 MB of float64, written", "import numpy"),
    "child": ("""
        subprocess.run([sys.executable, "-c", "data = bytearray(100_000_000)"], check=True)
        """, "import subprocess, sys"),
}


@pytest.mark.parametrize("case", sorted(MEASURED_RAM_CASES))
def test_fits_ram_measured(pytester: pytest.Pytester, case: str) -> None:
    """fits_ram counts 100 MB from Python, native code (ctypes, numpy) or a child process: 50MB breaks, 500MB holds."""
    body, prelude = MEASURED_RAM_CASES[case]
    run = run_budgets(pytester, pass_and_fail('fits_ram("{limit}")', body, "500MB", "50MB", prelude))
    run.result.assert_outcomes(passed=1, failed=1)
    run.result.stdout.fnmatch_lines(["FAILED *::test_fail - *fits_ram: measured * > budget 50MB"])
    assert run.row("test_fail")["value"] >= 95e6


def test_child_peak_seen_per_test() -> None:
    """Each measured block sees its own child's peak, even one no bigger than an earlier block's child."""
    from fitplan.plugin.measure import PeakMeter

    waitpid = os.waitpid
    peaks = []
    for _ in range(2):
        meter = PeakMeter()
        meter.start()
        subprocess.run([sys.executable, "-c", "data = bytearray(100_000_000)"], check=True, timeout=60)
        peaks.append(meter.stop().children_bytes)
    assert min(peaks) >= 100e6, peaks
    assert os.waitpid is waitpid  # put back once no meter runs


def test_fits_vram_measured_without_gpu(pytester: pytest.Pytester) -> None:
    """fits_vram with no GPU to read passes as "not measured" in the summary."""
    run = run_budgets(pytester, """
        @pytest.mark.fits_vram("1GB")
        def test_vram():
            pass
        """)
    run.result.assert_outcomes(passed=1)
    run.result.stdout.fnmatch_lines(["*::test_vram *fits_vram*1GB*-*-  not measured [[]ok]"])
    assert run.row("test_vram")["value"] is None


@pytest.mark.parametrize("strict", [["--fitplan-strict"], ["-o", "fitplan_strict=true"]], ids=["cli", "ini"])
def test_not_measured_fails_when_strict(pytester: pytest.Pytester, strict: list[str]) -> None:
    """--fitplan-strict (or ini fitplan_strict) fails budgets that could not be measured: VRAM, tokens/s."""
    run = run_budgets(pytester, """
        @pytest.mark.fits_vram("1GB")
        def test_vram():
            pass

        @pytest.mark.min_tokens_per_s(10)
        def test_rate(fitplan_meter):
            pass
        """, *strict)
    run.result.assert_outcomes(failed=2)
    run.result.stdout.fnmatch_lines_random([
        "FAILED *::test_vram - *fits_vram: not measured (no GPU memory readable *); --fitplan-strict fails it",
        "FAILED *::test_rate - *min_tokens_per_s: not measured (nothing recorded *); --fitplan-strict fails it",
    ])


@pytest.mark.parametrize(("pins", "limit", "passed"), [
    ('weights="Q4_K_M", context=8192', "12GB", True),
    ("", "12GB", False),  # bf16 as shipped: 16 GB of weights alone
    ("offload=True", "12GiB", True),  # the solver keeps the GPU part within the card (12 GiB)
], ids=["q4", "as-shipped", "offload"])
def test_fits_vram_predicted(pytester: pytest.Pytester, pins: str, limit: str, passed: bool) -> None:
    """fits_vram(model=...) holds the predicted plan on the target GPU against the budget."""
    pins = ", " + pins if pins else ""
    run = run_budgets(pytester, f"""
        @pytest.mark.fits_vram("{limit}", model="llama-3.1-8b", hardware="rtx-3060-12gb"{pins})
        def test_llama():
            pass
        """)
    run.result.assert_outcomes(passed=int(passed), failed=int(not passed))
    if not passed:
        run.result.stdout.fnmatch_lines(
            ["*fits_vram: predicted on rtx-3060-12gb * > budget 12GB (gpu0: weights *"])
    row = run.row("test_llama")
    assert (row["form"], row["where"], row["passed"]) == ("predicted", "predicted on rtx-3060-12gb", passed)


def test_fits_ram_predicted_on_cpu_profile(pytester: pytest.Pytester) -> None:
    """fits_ram(model=...) on a CPU-only profile holds the predicted host memory (~1 GB for SmolLM2-135M)."""
    run = run_budgets(pytester, pass_and_fail(
        'fits_ram("{limit}", model="smollm2-135m", hardware="gha-ubuntu-4core")', "pass", "2GB", "500MB"))
    run.result.assert_outcomes(passed=1, failed=1)
    run.result.stdout.fnmatch_lines(
        ["FAILED *::test_fail - *fits_ram: predicted on gha-ubuntu-4core * > budget 500MB (cpu: weights *"])


def test_max_latency_from_timer_samples(pytester: pytest.Pytester) -> None:
    """max_latency with fitplan_timer holds the samples' percentile, not the call's wall time."""
    body = """
        time.sleep(0.4)  # outside the timer: not held against the budget
        fitplan_timer(lambda: time.sleep(0.02), repeat=5, warmup=0)
        """
    run = run_budgets(pytester, pass_and_fail('max_latency("{limit}", percentile=90)', body, "300ms", "5ms",
                                              "import time"))
    run.result.assert_outcomes(passed=1, failed=1)
    run.result.stdout.fnmatch_lines(
        ["FAILED *::test_fail - *max_latency: measured * > budget 5ms (p90 of 5 fitplan_timer samples)"])


def test_max_latency_from_call_time(pytester: pytest.Pytester) -> None:
    """max_latency without fitplan_timer holds the call phase's wall time."""
    run = run_budgets(pytester, pass_and_fail('max_latency("{limit}")', "time.sleep(0.3)", "5s", "100ms",
                                              "import time"))
    run.result.assert_outcomes(passed=1, failed=1)
    run.result.stdout.fnmatch_lines(
        ["FAILED *::test_fail - *max_latency: measured * > budget 100ms (the call phase's wall time)"])
    assert run.row("test_fail")["value"] >= 0.3


def test_min_tokens_per_s_measured(pytester: pytest.Pytester) -> None:
    """min_tokens_per_s holds what fitplan_meter.record recorded (500 tokens in 1 s)."""
    body = "fitplan_meter.record(300, 0.5)\nfitplan_meter.record(200, 0.5)"
    run = run_budgets(pytester, pass_and_fail("min_tokens_per_s({limit})", body, "100", "1000"))
    run.result.assert_outcomes(passed=1, failed=1)
    run.result.stdout.fnmatch_lines(
        ["FAILED *::test_fail - *min_tokens_per_s: measured 500.0 tok/s < budget 1000 (500 tokens in 1.000 s)"])


def test_min_tokens_per_s_nothing_recorded(pytester: pytest.Pytester) -> None:
    """min_tokens_per_s with nothing recorded passes as "not measured" (strict: see above)."""
    run = run_budgets(pytester, """
        @pytest.mark.min_tokens_per_s(10)
        def test_rate(fitplan_meter):
            pass
        """)
    run.result.assert_outcomes(passed=1)
    assert run.row("test_rate")["where"] == "not measured"


def test_min_tokens_per_s_predicted(pytester: pytest.Pytester) -> None:
    """min_tokens_per_s(model=...) holds the predicted decode rate (~118 tok/s, Llama 8B Q4_K_M on a 4090)."""
    run = run_budgets(pytester, pass_and_fail(
        'min_tokens_per_s({limit}, model="llama-3.1-8b", hardware="rtx-4090-24gb", weights="Q4_K_M")',
        "pass", "10", "100000"))
    run.result.assert_outcomes(passed=1, failed=1)
    run.result.stdout.fnmatch_lines(["FAILED *::test_fail - *min_tokens_per_s: predicted on rtx-4090-24gb "
                                     "* tok/s < budget 100000 (llama.cpp Q4_K_M*)"])


# ---------------------------------------------------------------------------------------------
# bad values: that test errors with one line, the rest of the file runs

@pytest.mark.parametrize(("marker", "quoted"), [
    ('fits_vram("12XB")', "bad size '12XB'"),
    ('fits_ram("-1GB")', "bad size '-1GB'"),
    ('max_latency("fast")', "bad duration 'fast'"),
    ("min_tokens_per_s(-5)", "bad rate -5"),
    ("min_tokens_per_s(0)", "bad rate 0"),
    ('fits_vram("12GB", model="llama-3.1-8b", colour="red")', "unknown argument colour="),
    ('fits_ram("1GB", weights="Q4_K_M")', "pins (weights) need model="),
    ('max_latency("1s", percentile=0)', "percentile=0 must be"),
], ids=["size-unit", "size-negative", "duration", "rate-negative", "rate-zero", "unknown-pin", "pin-no-model",
        "percentile-zero"])
def test_bad_marker_value_errors_that_test_only(pytester: pytest.Pytester, marker: str, quoted: str) -> None:
    """A bad marker value errors its test with one line naming marker, test and value; other tests pass."""
    run = run_budgets(pytester, f"""
        @pytest.mark.{marker}
        def test_bad():
            pass

        @pytest.mark.fits_ram("1GB")
        def test_good():
            pass
        """)
    run.result.assert_outcomes(passed=1, errors=1)
    kind = marker.split("(")[0]
    line = next(x for x in run.result.stdout.lines if x.startswith(f"ERROR {INNER_FILE}.py::test_bad - "))
    assert f"@pytest.mark.{kind} on {INNER_FILE}.py::test_bad" in line and quoted in line, line
    assert "INTERNALERROR" not in run.result.stdout.str()


# ---------------------------------------------------------------------------------------------
# precedence: marker > command line > environment > ini

HARDWARE_TESTS = """
    @pytest.mark.fits_ram("1TB", model="smollm2-135m")
    def test_default_hardware():
        pass

    @pytest.mark.fits_ram("1TB", model="smollm2-135m", hardware="rtx-3060-12gb")
    def test_marker_hardware():
        pass
    """


@pytest.mark.parametrize(("env", "cli", "expected"), [
    (None, None, "gha-ubuntu-4core"),
    ("laptop-cpu-16gb", None, "laptop-cpu-16gb"),
    ("laptop-cpu-16gb", "rtx-4090-24gb", "rtx-4090-24gb"),
], ids=["ini", "env-over-ini", "cli-over-env"])
def test_hardware_precedence(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, env: str | None,
                             cli: str | None, expected: str) -> None:
    """Predicted budgets use --fitplan-hardware > FITPLAN_HARDWARE > ini; a marker's hardware= beats all."""
    pytester.makeini("[pytest]\nfitplan_hardware = gha-ubuntu-4core\n")
    if env:
        monkeypatch.setenv("FITPLAN_HARDWARE", env)
    run = run_budgets(pytester, HARDWARE_TESTS, *(["--fitplan-hardware", cli] if cli else []))
    run.result.assert_outcomes(passed=2)
    assert run.row("test_default_hardware")["where"] == f"predicted on {expected}"
    assert run.row("test_marker_hardware")["where"] == "predicted on rtx-3060-12gb"
    run.result.stdout.fnmatch_lines([f"*::test_default_hardware *predicted on {expected} [[]ok]"])


@pytest.mark.parametrize(("ini", "cli", "limit", "origin"), [
    ("50MB", None, "50MB", "ini fitplan_default_ram"),
    ("50MB", "500MB", "500MB", "--fitplan-default-ram"),
    ("500MB", "50MB", "50MB", "--fitplan-default-ram"),
], ids=["ini", "cli-loosens", "cli-tightens"])
def test_default_ram_precedence(pytester: pytest.Pytester, ini: str, cli: str | None, limit: str,
                                origin: str) -> None:
    """--fitplan-default-ram beats ini fitplan_default_ram; a test's own fits_ram marker beats both."""
    pytester.makeini(f"[pytest]\nfitplan_default_ram = {ini}\n")
    run = run_budgets(pytester, with_allocate("""
    def test_default():
        data = allocate()

    @pytest.mark.fits_ram("1GB")
    def test_marker():
        data = allocate()
    """), *(["--fitplan-default-ram", cli] if cli else []))
    default, marker = run.row("test_default"), run.row("test_marker")
    assert (default["limit_text"], default["origin"], default["passed"]) == (limit, origin, limit == "500MB")
    assert (marker["limit_text"], marker["origin"], marker["passed"]) == ("1GB", "marker", True)
    run.result.assert_outcomes(passed=1 + (limit == "500MB"), failed=int(limit == "50MB"))


def test_bad_default_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """A bad --fitplan-default-ram stops the run at once with a usage error naming the option."""
    run = run_budgets(pytester, "def test_x():\n    pass\n", "--fitplan-default-ram", "lots")
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    run.result.stderr.fnmatch_lines(["*bad size 'lots' (--fitplan-default-ram)*"])


# ---------------------------------------------------------------------------------------------
# reports: summary table, JSON, JUnit XML, xdist

MIXED_BUDGETS = ALLOCATE_100MB + """
import time

@pytest.mark.fits_ram("500MB")
def test_ram_ok():
    data = allocate()

@pytest.mark.fits_ram("50MB")
def test_ram_broken():
    data = allocate()

@pytest.mark.max_latency("100ms")
def test_slow():
    time.sleep(0.3)

@pytest.mark.min_tokens_per_s(100)
def test_rate_ok(fitplan_meter):
    fitplan_meter.record(500, 1.0)

@pytest.mark.fits_vram("12GB", model="llama-3.1-8b", hardware="rtx-3060-12gb", weights="Q4_K_M")
def test_vram_ok():
    pass

@pytest.mark.fits_vram("12GB", model="llama-3.1-8b", hardware="rtx-3060-12gb")
def test_vram_broken():
    pass

def test_no_budget():
    pass
"""
MIXED_OUTCOMES = {"passed": 4, "failed": 3}


def test_terminal_summary_table(pytester: pytest.Pytester) -> None:
    """The "fitplan budgets" section has a header row and one row per budget marked [ok] or [BROKEN]."""
    run = run_budgets(pytester, MIXED_BUDGETS)
    run.result.assert_outcomes(**MIXED_OUTCOMES)
    run.result.stdout.fnmatch_lines([
        "*= fitplan budgets =*",
        "test * budget * limit * value * headroom  form",
        "*::test_ram_broken * fits_ram * 50MB * MB * -* MB  measured [[]BROKEN]",
        "*::test_ram_ok * fits_ram * 500MB * MB * MB  measured [[]ok]",
        "*::test_rate_ok * min_tokens_per_s * 100 * 500.0 tok/s * 400.0 tok/s  measured [[]ok]",
        "*::test_slow * max_latency * 100ms * -*  measured [[]BROKEN]",
        "*::test_vram_broken * fits_vram * 12GB * GB * -* GB  predicted on rtx-3060-12gb [[]BROKEN]",
        "*::test_vram_ok * fits_vram * 12GB * GB * GB  predicted on rtx-3060-12gb [[]ok]",
    ])
    assert "test_no_budget " not in run.result.stdout.str().split("fitplan budgets")[-1]


def test_json_report(pytester: pytest.Pytester) -> None:
    """--fitplan-report writes every budget with test, kind, limit, value, headroom and verdict."""
    run = run_budgets(pytester, MIXED_BUDGETS)
    assert len(run.budgets) == 6
    for row in run.budgets:
        assert {"test", "kind", "limit", "value", "headroom", "passed"} <= row.keys()
        assert row["passed"] == (row["headroom"] >= 0), row
    ram = run.row("test_ram_broken")
    assert (ram["kind"], ram["limit"], ram["passed"]) == ("fits_ram", 50e6, False)
    assert ram["headroom"] == pytest.approx(ram["limit"] - ram["value"])
    rate = run.row("test_rate_ok")
    assert (rate["value"], rate["headroom"], rate["passed"]) == (500.0, 400.0, True)


def test_junit_properties(pytester: pytest.Pytester) -> None:
    """Each budget is a fitplan_budget property of its JUnit testcase; a broken one is a <failure>."""
    run = run_budgets(pytester, MIXED_BUDGETS, "--junitxml", "junit.xml")
    cases = {case.get("name"): case for case in ET.parse(pytester.path / "junit.xml").iter("testcase")}
    for row in run.budgets:
        case = cases[row["test"].split("::")[-1]]
        values = [json.loads(p.get("value")) for p in case.iter("property") if p.get("name") == "fitplan_budget"]
        assert values == [row]
        assert (case.find("failure") is None) == row["passed"]
        assert case.find("error") is None
    assert not list(cases["test_no_budget"].iter("property"))


def test_broken_budget_is_a_failure_not_an_error(pytester: pytest.Pytester) -> None:
    """A broken budget fails the test in its call phase (outcome failed), never as a setup/teardown error."""
    run = run_budgets(pytester, pass_and_fail('fits_ram("{limit}")', "data = allocate()", "1GB", "50MB",
                                              ALLOCATE_100MB), "-rA")
    run.result.assert_outcomes(passed=1, failed=1, errors=0)
    run.result.stdout.fnmatch_lines(["*_ test_fail _*", "fits_ram: measured * > budget 50MB"])
    assert "at teardown" not in run.result.stdout.str() and "at setup" not in run.result.stdout.str()


def test_xdist_matches_serial(pytester: pytest.Pytester) -> None:
    """-n 2 gives the same outcomes and the same budget verdicts as a serial run."""
    serial = run_budgets(pytester, MIXED_BUDGETS)
    parallel = run_budgets(pytester, MIXED_BUDGETS, "-n", "2")
    serial.result.assert_outcomes(**MIXED_OUTCOMES)
    parallel.result.assert_outcomes(**MIXED_OUTCOMES)
    assert parallel.verdicts() == serial.verdicts()
    parallel.result.stdout.fnmatch_lines(["*= fitplan budgets =*", "*::test_ram_broken *[[]BROKEN]"])


def test_markers_listed(pytester: pytest.Pytester) -> None:
    """`pytest --markers` lists the four budget markers with their help."""
    result = pytester.runpytest_subprocess("--markers")
    for line in ("@pytest.mark.fits_vram(size, *, model=None, hardware=None, **pins): peak GPU memory*",
                 "@pytest.mark.fits_ram(size, *, model=None, hardware=None, **pins): peak resident memory*",
                 "@pytest.mark.max_latency(duration, *, percentile=50): the test's time*",
                 "@pytest.mark.min_tokens_per_s(rate, *, model=None, hardware=None, **pins): tokens/s*"):
        result.stdout.fnmatch_lines([line])


# ---------------------------------------------------------------------------------------------
# fixtures

def test_fitplan_budget_measures_a_block(pytester: pytest.Pytester) -> None:
    """fitplan_budget.measure() gives the block's peak RAM (above what it allocated) and its seconds."""
    run = run_budgets(pytester, with_allocate("""
    def test_block(fitplan_budget):
        with fitplan_budget.measure() as m:
            data = allocate()
        assert m.peak_ram_bytes > 100_000_000, m.peak_ram_bytes
        assert m.seconds > 0
    """))
    run.result.assert_outcomes(passed=1)


def test_fitplan_budget_keeps_the_tests_own_peak(pytester: pytest.Pytester) -> None:
    """Measuring a block inside a fits_ram test does not erase the peak the test reached before it."""
    run = run_budgets(pytester, with_allocate("""
    @pytest.mark.fits_ram("50MB")
    def test_peak_then_block(fitplan_budget):
        data = allocate()
        del data  # freed: only the peak counter remembers the 100 MB
        with fitplan_budget.measure() as m:
            pass
        assert m.peak_ram_bytes < 50_000_000
    """))
    run.result.assert_outcomes(failed=1)
    run.result.stdout.fnmatch_lines(["FAILED *::test_peak_then_block - *fits_ram: measured * > budget 50MB"])


def test_fitplan_plan_fixture(pytester: pytest.Pytester) -> None:
    """fitplan_plan returns the advise document for a catalog model on the hardware in force."""
    run = run_budgets(pytester, """
    def test_plan(fitplan_plan, fitplan_hardware):
        doc = fitplan_plan("smollm2-135m", context=2048)
        assert doc["hardware"]["name"] == fitplan_hardware.name == "gha-ubuntu-4core"
        assert doc["model"]["layers"] > 0
        assert doc["plan"]["runtime"] and doc["plan"]["weights"] and doc["plan"]["context"] == 2048
        assert doc["predicted"]["memory"]["cpu"]["total"] > 0
    """, "--fitplan-hardware", "gha-ubuntu-4core")
    run.result.assert_outcomes(passed=1)


# ---------------------------------------------------------------------------------------------
# import cost

def test_plugin_imports_nothing_heavy() -> None:
    """Importing the plugin (as pytest does in every run) loads none of torch, numpy, pydantic, rich, ..."""
    code = (f"import fitplan.plugin.pytest_plugin, sys; "
            f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_budgets_of_a_failing_test_are_still_reported(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A test that fails on its own keeps its own failure, and its budget figures still reach the report."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.fits_ram("500MB")
        def test_fails_itself():
            data = bytearray(10_000_000)
            assert False, "the test's own failure"
        """
    )
    report = tmp_path / "report.json"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fitplan-report", str(report))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the test's own failure*"])
    budgets = json.loads(report.read_text())["budgets"]
    assert len(budgets) == 1 and budgets[0]["passed"] and budgets[0]["value"] > 9_000_000


def test_a_pin_of_the_wrong_type_is_one_error_line(pytester: pytest.Pytester) -> None:
    """gpu_layers="all" or a list-valued pin errors that test (at setup, before any prediction) with one
    line naming the pin; the session goes on."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.fits_vram("12GB", model="llama-3.1-8b", hardware="rtx-3060-12gb", gpu_layers="all")
        def test_text_layers():
            pass

        @pytest.mark.fits_vram("12GB", model="llama-3.1-8b", hardware="rtx-3060-12gb", weights=["Q4_K_M"])
        def test_list_pin():
            pass

        def test_other():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=2)
    assert "Traceback" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*test_text_layers: gpu_layers='all': Input should be a valid integer*",
                                 "*test_list_pin: weights=?'Q4_K_M'?: Input should be a valid string*"])
