"""`fitplan check`: every budget entry predicted on every target profile, held against its limits,
and optionally against a saved baseline (a prediction that worsened by more than the tolerance
fails even under budget). Pure evaluation here; the CLI parses and prints.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

from fitplan.advisor.budgets.budget_file import BudgetEntry, BudgetFile
from fitplan.advisor.budgets.vocabulary import LIMITS, show
from fitplan.errors import BadValueError, FitplanError

if TYPE_CHECKING:
    from fitplan.hardware_spec import HardwareSpec

REPORT_MARK = "fitplan check"
MAX_BASELINE_BYTES = 16 * 2**20
REPORT_KIND = "fitplan-check-report"  # the JSON report's "kind"; what -o verifies before replacing a report
# the first line of a text or github report written with -o; junit carries it as a comment after the
# XML declaration
REPORT_LINE = "fitplan-check-report: written by fitplan check (a rerun with -o replaces it)"
JUNIT_REPORT_LINE = f"<!-- {REPORT_LINE} -->"  # markdown's first line too (a comment: not rendered)


@dataclass
class Row:
    """One limit of one entry on one profile."""

    entry: int
    label: str
    profile: str
    metric: str
    limit: float
    predicted: float
    ok: bool
    line: int
    key: str  # stable across runs and edits of the entry: its name (else model and occurrence), profile, metric
    detail: str = ""
    baseline: float | None = None
    regressed: bool = False
    measured: bool = False  # a figure fitplan verify measured here (--measure), not a prediction
    holds: bool = True  # within its limit, whatever the baseline says (`ok` also counts a failing regression)

    @property
    def headroom(self) -> float:
        """The share of the limit left (negative: over it)."""
        larger_is_worse = LIMITS[self.metric][1]
        if not self.limit:
            return 0.0
        return (self.limit - self.predicted) / self.limit if larger_is_worse else (self.predicted - self.limit) / self.limit


def check(budgets: BudgetFile, *, baseline: dict[str, float] | None = None, tolerance: float = 0.05,
          measured: bool = False, reserve: str | None = None, profiles: list[str] | None = None,
          regression_fails: bool = True) -> list[Row]:
    """Every limit of every entry on every profile; `reserve` (--reserve) for entries without their own;
    `profiles` (--profiles, names or paths from the current folder) in place of each entry's own list. A
    prediction worse than the baseline by more than `tolerance` fails unless `regression_fails` is off (it
    is still reported, as REGRESSED)."""
    targets = [(p, p) for p in profiles] if profiles else None
    rows = [r for index, entry in enumerate(budgets.entries)
            for profile, opened in targets or [(p, budgets.profile_path(p)) for p in entry.hardware]
            for r in entry_rows(budgets, index, profile, reserve=reserve, opened=opened)]
    if measured:
        rows += measure(budgets, rows, dict(targets) if targets else None)
    for row in rows:
        row.holds = row.ok
        if baseline and row.key in baseline:
            row.baseline = baseline[row.key]
            row.regressed = _worsened(row, tolerance)
            row.ok = row.ok and not (row.regressed and regression_fails)
    return rows


def entry_rows(budgets: BudgetFile, index: int, profile: str, *, reserve: str | None = None,
               opened: str | None = None) -> list[Row]:
    """The rows of entry `index` on `profile`, each on its limit's line, keyed for baselines. `opened` is the
    profile as loaded (default: `profile` resolved beside the budgets file); keys keep `profile` as written."""
    entry, line = budgets.entries[index], budgets.lines[index]
    ident = entry.name or entry.model
    repeat = sum((e.name or e.model) == ident for e in budgets.entries[:index])
    ident += f"#{repeat + 1}" if repeat else ""
    try:
        rows = _entry_rows(entry, budgets.model_path(index), index, profile,
                           opened or budgets.profile_path(profile), line, reserve)
    except FitplanError as exc:
        raise BadValueError(f"{budgets.path}:{line}: budget {index + 1} on {profile}: {exc}") from None
    return [replace(r, line=budgets.line_of(index, r.metric), key=f"{ident}|{profile}|{r.metric}") for r in rows]


def _entry_rows(entry: BudgetEntry, model: str, index: int, profile: str, hardware: str, line: int,
                reserve: str | None = None) -> list[Row]:
    """`model` and `hardware` are the entry's model and `profile` as opened (beside the budgets file)."""
    from fitplan.advisor.budgets.predicted import predicted_plan, with_reserve
    from fitplan.advisor.planner.solver import plan_loss_of

    limits = entry.limits()
    _, hw, advice = predicted_plan(model, hardware, with_reserve(entry.pins(), reserve),
                                   "max_vram" in limits and not entry.offload, allow_hub=True)
    chosen = advice.chosen
    plan = f"{chosen.setup.runtime} {chosen.setup.weights}, {chosen.placement}"
    figures: dict[str, tuple[float, str]] = {}
    gpus = {d: m.total for d, m in chosen.memory.items() if d.startswith("gpu")}
    if gpus:
        device = max(gpus, key=gpus.__getitem__)
        figures["max_vram"] = (float(gpus[device]), f"{plan}; largest GPU {device}")
    else:
        figures["max_vram"] = (0.0, f"{plan}; no GPU in {hw.name}")
    figures["max_ram"] = (float(chosen.memory["cpu"].total), plan)
    speed = chosen.speed
    if speed is not None:
        figures["min_decode_tokens_per_s"] = (speed.decode_tokens_per_s, f"{plan}; {speed.provenance}")
        figures["min_prefill_tokens_per_s"] = (speed.prefill_tokens_per_s, f"{plan}; {speed.provenance}")
        figures["max_ttft"] = (speed.ttft_s, f"{plan}; 512-token prompt, {speed.provenance}")
    figures["max_ppl_increase"] = (plan_loss_of(chosen), f"{plan}; {chosen.fmt.quality_source}")
    rows = []
    for metric, limit in limits.items():
        value, detail = figures.get(metric, (float("nan"), "not predicted"))
        larger_is_worse = LIMITS[metric][1]
        ok = value == value and (value <= limit if larger_is_worse else value >= limit)
        if not advice.fits:
            detail += f"; the plan does not fit {hw.name}: {chosen.reason}"
        rows.append(Row(index, entry.label(index), profile, metric, limit, value, ok, line, "", detail))
    return rows


MEASURED_METRICS = {"peak memory cpu (process RSS)": "max_ram", "decode_tokens_per_s": "min_decode_tokens_per_s",
                    "prefill_tokens_per_s": "min_prefill_tokens_per_s", "ttft_s": "max_ttft"}
MEASURE_PROMPT_TOKENS, MEASURE_GEN_TOKENS = 128, 32


def measure(budgets: BudgetFile, rows: list[Row], opened: dict[str, str] | None = None) -> list[Row]:
    """`--measure`: for entries whose profile is `auto` or matches this machine (same GPU model and
    count, or no GPU for a CPU profile), run the plan for real (fitplan verify) and gate on the
    measured figures too; one row per measured limit, beside the predicted ones. `opened`: each
    profile as loaded, where --profiles named them."""
    import os

    from fitplan.advisor.budgets.predicted import hardware
    from fitplan.advisor.plans.verify_command import verify_plan

    machine = hardware("auto")
    measured: list[Row] = []
    for row in {(r.entry, r.profile): r for r in rows}.values():
        entry = budgets.entries[row.entry]
        profile = opened[row.profile] if opened else budgets.profile_path(row.profile)
        if not _matches(hardware(profile), machine, row.profile):
            continue
        limits = entry.limits()
        model = budgets.model_path(row.entry)
        if not os.path.exists(model):
            measured += [replace(row, metric=m, limit=v, predicted=float("nan"), ok=True, measured=True,
                                 key=row.key.rsplit("|", 1)[0] + f"|{m}|measured",
                                 detail="not measured: no local weights (a catalog or hub model)")
                         for m, v in limits.items() if m in MEASURED_METRICS.values()]
            continue
        pins = {k: v for k, v in entry.pins() if k in ("runtime", "weights", "context", "threads", "gpu_layers", "kv_cache")}
        doc = verify_plan(model, prompt_tokens=MEASURE_PROMPT_TOKENS, gen_tokens=MEASURE_GEN_TOKENS, repeat=1, **pins)
        figures = {MEASURED_METRICS[r["metric"]]: float(r["measured"])
                   for r in doc["comparison"] if r["metric"] in MEASURED_METRICS}
        gpu = [float(r["measured"]) for r in doc["comparison"] if r["metric"].startswith("peak memory gpu")]
        if gpu:
            figures["max_vram"] = max(gpu)
        for metric, limit in limits.items():
            if metric not in figures:
                continue
            value = figures[metric]
            ok = value <= limit if LIMITS[metric][1] else value >= limit
            measured.append(replace(row, metric=metric, limit=limit, predicted=value, ok=ok, measured=True,
                                    line=budgets.line_of(row.entry, metric),
                                    key=row.key.rsplit("|", 1)[0] + f"|{metric}|measured",
                                    detail=f"measured by fitplan verify on this machine ({MEASURE_PROMPT_TOKENS}-token "
                                           f"prompt, {MEASURE_GEN_TOKENS} tokens)"))
    return measured


def _matches(profile: HardwareSpec, machine: HardwareSpec, name: str) -> bool:
    if name == "auto":
        return True
    if not profile.gpus:
        return not machine.gpus
    return sorted(g.name for g in profile.gpus) == sorted(g.name for g in machine.gpus)


def _worsened(row: Row, tolerance: float) -> bool:
    base = row.baseline
    if base is None or base == 0:
        return False
    change = (row.predicted - base) / abs(base)
    return change > tolerance if LIMITS[row.metric][1] else -change > tolerance


def load_baseline(path: str) -> dict[str, float]:
    """The predicted figures of an earlier `fitplan check --format json` run, by key."""
    from fitplan.advisor.models.safetensors_header import strict_json
    from fitplan.user_files import read_bytes

    doc = strict_json(read_bytes(path, limit=MAX_BASELINE_BYTES, what="--baseline"), path)
    try:
        return {str(r["key"]): float(r["predicted"]) for r in doc["results"] if r["predicted"] is not None}
    except (KeyError, TypeError, ValueError):
        raise BadValueError(f"--baseline {path} is not a `fitplan check --format json` report") from None


def _verdict(row: Row) -> str:
    """A broken limit says so first, whatever the baseline; then a regression, failing or allowed."""
    if not row.holds and row.predicted == row.predicted:
        return "BROKEN"
    if row.regressed:
        return "REGRESSED" if not row.ok else "REGRESSED (allowed)"
    if row.predicted != row.predicted:
        return "not measured"
    return "ok" if row.ok else "BROKEN"


COLUMNS = ("budget", "profile", "limit", "predicted", "headroom", "baseline", "change", "verdict")


def _cells(r: Row) -> tuple[str, ...]:
    """One row of the text and markdown tables, a cell per COLUMNS."""
    return (f"{r.label} {r.metric}{' (measured)' if r.measured else ''}", r.profile,
            show(r.metric, r.limit), show(r.metric, r.predicted),
            f"{r.headroom:+.0%}" if r.predicted == r.predicted else "",
            show(r.metric, r.baseline) if r.baseline is not None else "", _change(r), _verdict(r))


def render_text(rows: list[Row], path: str) -> str:
    change = COLUMNS.index("change")  # the text table leaves it out, as it always has
    header = COLUMNS[:change] + COLUMNS[change + 1:]
    table = [header] + [cells[:change] + cells[change + 1:] for cells in map(_cells, rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    broken = [r for r in rows if not r.ok]
    regressed = sum(r.regressed for r in rows)
    lines.append(f"{REPORT_MARK}: {path}: {len(rows)} limits, {len(broken)} failing"
                 + (f" ({regressed} worsened beyond the baseline tolerance)" if regressed else "") +
                 "".join(f"\n  {r.label} on {r.profile}: {r.metric} {show(r.metric, r.predicted)} vs limit "
                         f"{show(r.metric, r.limit)} ({r.detail})" for r in broken))
    return "\n".join(lines) + "\n"


def render_json(rows: list[Row], path: str, tolerance: float) -> str:
    results = [{**asdict(r), "headroom": r.headroom if r.predicted == r.predicted else None, "verdict": _verdict(r),
                "predicted": r.predicted if r.predicted == r.predicted else None} for r in rows]
    return json.dumps({"kind": REPORT_KIND, "tool": REPORT_MARK, "config": path, "ok": all(r.ok for r in rows),
                       "baseline_tolerance": tolerance, "results": results}, indent=2, allow_nan=False) + "\n"


def render_junit(rows: list[Row], path: str) -> str:
    """One test case per entry x profile; its failure lists every broken limit."""
    cases: dict[tuple[int, str], list[Row]] = {}
    for r in rows:
        cases.setdefault((r.entry, r.profile), []).append(r)
    failures = sum(not all(r.ok for r in group) for group in cases.values())
    out = ['<?xml version="1.0" encoding="utf-8"?>', JUNIT_REPORT_LINE,
           f'<testsuites name={quoteattr(REPORT_MARK)}>',
           f'  <testsuite name={quoteattr(REPORT_MARK)} tests="{len(cases)}" failures="{failures}" errors="0">']
    for (_, profile), group in cases.items():
        name = quoteattr(f"{group[0].label} on {profile}")
        out.append(f'    <testcase classname={quoteattr(f"fitplan.budget.{path}")} name={name}>')
        broken = [r for r in group if not r.ok]
        if broken:
            message = "; ".join(f"{r.metric} {show(r.metric, r.predicted)} vs limit {show(r.metric, r.limit)}"
                                + (" (regressed from the baseline)" if r.regressed else "") for r in broken)
            out.append(f"      <failure message={quoteattr(message)}>{escape(chr(10).join(r.detail for r in broken))}</failure>")
        props = "".join(f'<property name={quoteattr(r.metric)} value={quoteattr(show(r.metric, r.predicted))}/>' for r in group)
        out.append(f"      <properties>{props}</properties>")
        out.append("    </testcase>")
    out += ["  </testsuite>", "</testsuites>"]
    return "\n".join(out) + "\n"


def render_github(rows: list[Row], path: str) -> str:
    """Workflow commands: an error annotation on the budget's line for each broken limit."""
    lines = []
    for r in rows:
        if r.ok and not r.regressed:
            continue
        what = "broken" if not r.holds else "worsened beyond the baseline tolerance"
        message = (f"{r.label} on {r.profile}: {r.metric} {what}: predicted {show(r.metric, r.predicted)}, "
                   f"limit {show(r.metric, r.limit)}" + (f", baseline {show(r.metric, r.baseline)}"
                                                         if r.baseline is not None else "") + f" ({r.detail})")
        level = "error" if not r.ok else "warning"  # a regression --no-fail-on-regression lets pass
        lines.append(f"::{level} file={_gh_property(path)},line={r.line},title={_gh_property(REPORT_MARK)}::"
                     f"{_gh_data(message)}")
    broken = sum(not r.ok for r in rows)
    lines.append(f"::notice title={_gh_property(REPORT_MARK)}::{len(rows)} limits checked, {broken} broken")
    return "\n".join(lines) + "\n"


def verdict_line(rows: list[Row], path: str) -> str:
    """One sentence a reviewer reads first: does the change hold every budget, and did any prediction
    worsen against the baseline (failing, or allowed by --no-fail-on-regression)?"""
    broken = sum(not r.holds for r in rows)
    regressed = sum(r.regressed for r in rows)
    limits = f"{len(rows)} limit{'' if len(rows) == 1 else 's'}"
    allowed = " (allowed)" if regressed and all(r.ok for r in rows if r.regressed and r.holds) else ""
    worse = f", {regressed} worsened beyond the baseline tolerance{allowed}" if regressed else ""
    if not all(r.ok for r in rows):
        return f"fitplan check: FAILED, {broken} of {limits} broken{worse} in {path}"
    every = f"the {limits} holds" if len(rows) == 1 else f"all {limits} hold"
    return f"fitplan check: passed, {every}{worse} in {path}"


def render_markdown(rows: list[Row], path: str) -> str:
    """The job-summary report: the verdict, then a table of every limit with its headroom and its change
    against the baseline; the cells are padded so the table reads in a terminal as well."""
    table = [tuple(cell.replace("|", "\\|") for cell in row) for row in [COLUMNS, *map(_cells, rows)]]
    widths = [max(3, *(len(row[i]) for row in table)) for i in range(len(COLUMNS))]
    right = {2, 3, 4, 5, 6}  # figures align right
    rule = tuple(("-" * (w - 1) + ":") if i in right else "-" * w for i, w in enumerate(widths))

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    out = [f"**{verdict_line(rows, path)}**", "", line(table[0]), line(rule), *map(line, table[1:])]
    failing = [r for r in rows if not r.ok or r.regressed]
    if failing:
        out += ["", "What fails or worsened, and why:", ""]
        out += [(f"- {r.label} on {r.profile} (line {r.line}): {r.metric} {show(r.metric, r.predicted)} against "
                 f"the limit {show(r.metric, r.limit)}"
                 + (f", baseline {show(r.metric, r.baseline)} ({_verdict(r)})" if r.regressed and r.baseline is not None
                    else "") + f"; {r.detail}").replace("|", "\\|") for r in failing]
    return "\n".join(out) + "\n"


def _change(row: Row) -> str:
    """The prediction's change against the baseline, in percent of the baseline, and which way that is
    for this limit (more VRAM is worse, more tokens/s better)."""
    if row.baseline is None or not row.baseline or row.predicted != row.predicted:
        return ""
    change = (row.predicted - row.baseline) / abs(row.baseline)
    if f"{change:+.1%}" in ("+0.0%", "-0.0%"):
        return "+0.0%"
    worse = (change > 0) == LIMITS[row.metric][1]
    return f"{change:+.1%} {'worse' if worse else 'better'}"


def _gh_data(text: str) -> str:
    """Workflow-command escaping of a message (@actions/core escapeData)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(text: str) -> str:
    """... and of a property such as file= or title= (escapeProperty)."""
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


FORMATS = ("text", "json", "junit", "github", "markdown")


def report_is_ours(data: bytes) -> bool:
    """Whether `data` is a report fitplan check wrote, in any format, by its marker (fitplan/owned_files.py)."""
    from fitplan.owned_files import first_line, json_kind

    return json_kind(REPORT_KIND)(data) or first_line(REPORT_LINE)(data) or first_line(JUNIT_REPORT_LINE)(data)


def report_file_text(report: str, fmt: str) -> str:
    """The report as -o writes it: text and github reports open with their marker line, markdown with
    it as a comment."""
    if fmt == "markdown":
        return f"{JUNIT_REPORT_LINE}\n{report}"
    return f"{REPORT_LINE}\n{report}" if fmt in ("text", "github") else report


def render(rows: list[Row], fmt: str, path: str, tolerance: float) -> str:
    if fmt == "text":
        return render_text(rows, path)
    if fmt == "json":
        return render_json(rows, path, tolerance)
    if fmt == "junit":
        return render_junit(rows, path)
    if fmt == "github":
        return render_github(rows, path)
    if fmt == "markdown":
        return render_markdown(rows, path)
    raise BadValueError(f"unknown --format {fmt!r}; known: {', '.join(FORMATS)}")
