"""fitplan's pytest plugin: memory, VRAM, latency and throughput budgets as markers and fixtures.

Loaded in every pytest run of every repo that installs fitplan, so it imports nothing heavy:
no torch, no NVML, no file reads at import; predictions and measurements load what they need.

Settings, each an option, an ini key and (hardware) an environment variable; precedence
marker > command line > environment (FITPLAN_HARDWARE) > ini. A marker's `reserve=` pin beats
--fitplan-reserve / fitplan_reserve, the GPU memory predicted plans leave free.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import pytest

from fitplan.advisor.budgets.vocabulary import show
from fitplan.errors import FitplanError
from fitplan.plugin.budgets import KINDS, MARKER_HELP, Budget, parse_limit, parse_marker
from fitplan.plugin.fixtures import (  # noqa: F401  (pytest finds fixtures in the plugin's namespace)
    _fitplan_loaded_models,
    fitplan_budget,
    fitplan_hardware,
    fitplan_meter,
    fitplan_model,
    fitplan_plan,
    fitplan_timer,
)
from fitplan.plugin.measure import PeakMeter, PeakResult
from fitplan.plugin.state import SETTINGS_KEY, Settings, record_for

if TYPE_CHECKING:
    from pathlib import Path

REPORT_KIND = "fitplan-pytest-report"  # what --fitplan-report verifies before replacing a report


RESULTS_KEY = pytest.StashKey[list[dict[str, Any]]]()
BUDGETS_KEY = pytest.StashKey[list[Budget]]()
ERROR_KEY = pytest.StashKey[str]()
PROPERTY = "fitplan_budget"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fitplan", "fitplan budgets (memory, VRAM, latency, throughput)")
    options = (
        ("--fitplan-hardware", "fitplan_hardware", "target hardware for predicted budgets: a profile name, "
         "Nx<name> or .toml path (default: this machine; env FITPLAN_HARDWARE)"),
        ("--fitplan-report", "fitplan_report", "write every budget's figures as JSON to this path"),
        ("--fitplan-default-ram", "fitplan_default_ram", "a fits_ram budget for every test without one, e.g. 512MB"),
        ("--fitplan-default-vram", "fitplan_default_vram", "a fits_vram budget for every test without one, e.g. 8GB"),
        ("--fitplan-reserve", "fitplan_reserve", "memory predicted plans leave free on each GPU, e.g. 2GiB "
         "(default 1 GiB; 0: none); a marker's reserve= wins"),
    )
    for flag, ini, text in options:
        group.addoption(flag, dest=ini, default=None, help=text)  # None: the ini value still applies
        parser.addini(ini, text)
    group.addoption("--fitplan-report-force", dest="fitplan_report_force", action="store_true", default=False,
                    help="let --fitplan-report replace a file that fitplan did not write")
    group.addoption("--fitplan-budgets", dest="fitplan_budgets", action="store_true", default=False,
                    help="collect each [[tool.fitplan.budget]] entry x profile of pyproject.toml / fitplan.toml as a test")
    group.addoption("--fitplan-strict", dest="fitplan_strict", action="store_true", default=None,
                    help="fail budgets that could not be measured here (e.g. VRAM without a GPU)")
    parser.addini("fitplan_strict", "fail budgets that could not be measured here", type="bool", default=False)


def _setting(config: pytest.Config, name: str, env: str | None = None) -> tuple[Any, str]:
    """(value, where it came from): command line > environment > ini."""
    value = config.getoption(name)
    if value is not None:
        return value, "--" + name.replace("_", "-")
    if env and os.environ.get(env):
        return os.environ[env], env
    return (config.getini(name) or None), f"ini {name}"


def pytest_configure(config: pytest.Config) -> None:
    for kind in KINDS:
        config.addinivalue_line("markers", MARKER_HELP[kind])
    defaults = {}
    for kind, name in (("fits_ram", "fitplan_default_ram"), ("fits_vram", "fitplan_default_vram")):
        value, origin = _setting(config, name)
        try:
            defaults[kind] = Budget(kind, parse_limit(kind, value, origin), str(value), origin) if value else None
        except FitplanError as exc:
            raise pytest.UsageError(str(exc)) from None
    strict, _ = _setting(config, "fitplan_strict")
    report, origin = _setting(config, "fitplan_report")
    force = bool(config.getoption("fitplan_report_force"))
    if report and not hasattr(config, "workerinput"):
        try:  # refused before any test runs, not after
            _report_target(str(report), origin, force)
        except FitplanError as exc:
            raise pytest.UsageError(str(exc)) from None
    hardware, where = _setting(config, "fitplan_hardware", "FITPLAN_HARDWARE")
    if hardware and hardware != "auto":
        from fitplan.profiles.named import load_profile

        try:  # a bad target is the session's usage error, before any test runs
            load_profile(str(hardware), source=where)
        except FitplanError as exc:
            raise pytest.UsageError(str(exc)) from None
    reserve, where = _setting(config, "fitplan_reserve")
    if reserve is not None:
        from fitplan.units import parse_reserve

        try:
            parse_reserve(reserve, source=where)
        except FitplanError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[SETTINGS_KEY] = Settings(
        hardware=hardware, reserve=None if reserve is None else str(reserve),
        report=report, strict=bool(strict), report_origin=origin,
        report_force=force,
        default_ram=defaults["fits_ram"], default_vram=defaults["fits_vram"],
    )
    config.stash[RESULTS_KEY] = []
    config.pluginmanager.register(_Collector(config), "fitplan-budget-collector")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """With --fitplan-budgets, budget files become collectors (plugin/budget_items.py)."""
    if not parent.config.getoption("fitplan_budgets"):
        return None
    from fitplan.plugin.budget_items import collect

    return collect(file_path, parent)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Read every item's budgets once; a bad value becomes that test's error, not the session's."""
    settings = config.stash[SETTINGS_KEY]
    for item in items:
        try:
            budgets = [parse_marker(m.name, m.args, m.kwargs, item.nodeid)
                       for m in item.iter_markers() if m.name in KINDS]
        except FitplanError as exc:
            item.stash[ERROR_KEY] = str(exc)
            continue
        kinds = {b.kind for b in budgets}
        budgets += [d for d in (settings.default_ram, settings.default_vram) if d and d.kind not in kinds]
        if budgets:
            item.stash[BUDGETS_KEY] = budgets


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if ERROR_KEY in item.stash:
        pytest.fail(item.stash[ERROR_KEY], pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    budgets = item.stash.get(BUDGETS_KEY, None)
    if not budgets:
        return (yield)
    meter = PeakMeter()
    meter.start()
    try:
        result = yield
    except BaseException:
        _record(item, budgets, meter.stop())  # the test failed on its own: its figures still count
        raise
    broken = _record(item, budgets, meter.stop())
    if broken:
        pytest.fail("; ".join(broken), pytrace=False)
    return result


def _record(item: pytest.Item, budgets: list[Budget], peak: PeakResult) -> list[str]:
    """Put every budget's verdict in user_properties; the messages of the broken ones."""
    settings = item.config.stash[SETTINGS_KEY]
    verdicts = [_verdict(b, peak, item, settings) for b in budgets]
    for verdict in verdicts:
        item.user_properties.append((PROPERTY, json.dumps(verdict)))
    return [v["message"] for v in verdicts if not v["passed"]]


def _verdict(budget: Budget, peak: PeakResult, item: pytest.Item, settings: Settings) -> dict[str, Any]:
    """One budget's figure and verdict, as it goes to user_properties, the report and the summary."""
    detail, where = "", "measured"
    value: float | None
    try:
        if budget.predicted:
            from fitplan.plugin.predict import predict

            prediction = predict(budget, settings.hardware, settings.reserve)
            value, detail, where = prediction.value, prediction.detail, f"predicted on {prediction.hardware}"
        else:
            value, detail = _measured(budget, peak, item)
    except FitplanError as exc:
        return _row(budget, item, None, "error", passed=False, message=f"{budget.kind}: {exc}")
    if value is None:
        why = f"{budget.kind}: not measured ({detail})"
        return _row(budget, item, None, "not measured", passed=not settings.strict,
                    message=why + ("; --fitplan-strict fails it" if settings.strict else ""))
    lower_bound = budget.kind == "min_tokens_per_s"
    passed = value >= budget.limit if lower_bound else value <= budget.limit
    relation = "<" if lower_bound else ">"
    message = (f"{budget.kind}: {where} {show(budget.kind, value)} {relation} budget {budget.limit_text}"
               + (f" ({detail})" if detail else ""))
    return _row(budget, item, value, where, passed=passed, message=message)


def _measured(budget: Budget, peak: PeakResult, item: pytest.Item) -> tuple[float | None, str]:
    record = record_for(item)
    if budget.kind == "fits_ram":
        return peak.ram_total_bytes, "" if peak.exact else "no resettable peak-RSS counter on this OS"
    if budget.kind == "fits_vram":
        return peak.vram_bytes, "" if peak.vram_bytes is not None else "no GPU memory readable on this machine"
    if budget.kind == "max_latency":
        if record.timer_samples:
            ordered = sorted(record.timer_samples)
            index = min(len(ordered) - 1, max(0, round(budget.percentile / 100 * (len(ordered) - 1))))
            return ordered[index], f"p{budget.percentile:g} of {len(ordered)} fitplan_timer samples"
        return peak.seconds, "the call phase's wall time"
    rate = record.tokens_per_s
    return rate, (f"{record.tokens} tokens in {record.token_seconds:.3f} s" if rate is not None
                  else "nothing recorded with fitplan_model or fitplan_meter")


def _row(budget: Budget, item: pytest.Item, value: float | None, where: str, *, passed: bool,
         message: str) -> dict[str, Any]:
    headroom = None
    if value is not None:
        headroom = value - budget.limit if budget.kind == "min_tokens_per_s" else budget.limit - value
    return {"test": item.nodeid, "kind": budget.kind, "limit": budget.limit, "limit_text": budget.limit_text,
            "value": value, "form": "predicted" if budget.predicted else "measured", "where": where,
            "model": budget.model, "pins": dict(budget.pins), "origin": budget.origin, "headroom": headroom,
            "passed": passed, "message": message}


class _Collector:
    """Collects the figures from test reports: under xdist they arrive here from the workers."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == PROPERTY:
                self.config.stash[RESULTS_KEY].append(json.loads(str(value)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    rows = config.stash.get(RESULTS_KEY, [])
    if not rows or hasattr(config, "workerinput"):
        return
    terminalreporter.section("fitplan budgets")
    width = max(len(r["test"]) for r in rows)
    terminalreporter.write_line(f"{'test':<{width}}  {'budget':<16} {'limit':>10} {'value':>12} {'headroom':>12}  form")
    for r in sorted(rows, key=lambda r: (r["test"], r["kind"])):
        value = "-" if r["value"] is None else show(r["kind"], r["value"])
        headroom = "-" if r["headroom"] is None else show(r["kind"], abs(r["headroom"]))
        if r["headroom"] is not None and r["headroom"] < 0:
            headroom = "-" + headroom
        verdict = "ok" if r["passed"] else "BROKEN"
        terminalreporter.write_line(f"{r['test']:<{width}}  {r['kind']:<16} {r['limit_text']:>10} {value:>12} "
                                    f"{headroom:>12}  {r['where']} [{verdict}]")


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or not settings.report or hasattr(config, "workerinput"):
        return
    from fitplan.owned_files import json_kind, write_owned

    rows = config.stash.get(RESULTS_KEY, [])
    text = json.dumps({"kind": REPORT_KIND, "budgets": rows}, indent=2) + "\n"
    try:
        write_owned(settings.report, text, ours=json_kind(REPORT_KIND), option=settings.report_origin,
                    force=settings.report_force)
    except FitplanError as exc:  # the file changed during the run: say so, keep what is there
        import sys

        sys.stderr.write(f"fitplan: error: {exc}\n")
        session.exitstatus = pytest.ExitCode.USAGE_ERROR


def _report_target(path: str, origin: str, force: bool) -> None:
    from fitplan.owned_files import json_kind, writable_target

    writable_target(path, ours=json_kind(REPORT_KIND), option=origin, force=force)
