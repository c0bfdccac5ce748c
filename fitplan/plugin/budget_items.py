"""`pytest --fitplan-budgets`: every budget entry x target profile of pyproject.toml / fitplan.toml
becomes a pytest item (as pytest-mypy does for files), so one pytest run gates code and budgets."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _pytest._code.code import TerminalRepr

if TYPE_CHECKING:
    from _pytest._code.code import TracebackStyle

    from fitplan.advisor.budgets.budget_file import BudgetFile

BUDGET_FILES = ("pyproject.toml", "fitplan.toml")


def collect(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name not in BUDGET_FILES:
        return None
    from fitplan.advisor.budgets.budget_file import MAX_BUDGET_FILE_BYTES
    from fitplan.user_files import is_regular_file

    if not is_regular_file(str(file_path)):
        return None
    with open(file_path, "rb") as handle:  # the marker is looked for; the file is read whole when collected
        text = handle.read(MAX_BUDGET_FILE_BYTES).decode("utf-8", errors="replace")
    marker = "[[tool.fitplan.budget]]" if file_path.name == "pyproject.toml" else "[[budget]]"
    return BudgetFileCollector.from_parent(parent, path=file_path) if marker in text else None


class BudgetFileCollector(pytest.File):
    def collect(self) -> Any:
        from fitplan.advisor.budgets.budget_file import load_budgets
        from fitplan.errors import FitplanError

        try:
            budgets = load_budgets(str(self.path))
        except FitplanError as exc:  # a bad config is one collection error naming file, line and field
            raise self.CollectError(str(exc)) from None
        for index, entry in enumerate(budgets.entries):
            for profile in entry.hardware:
                yield BudgetItem.from_parent(self, name=f"{entry.label(index)} on {profile}", budgets=budgets,
                                             index=index, profile=profile)


class BudgetBroken(Exception):
    """A budget entry breaks a limit on a profile."""


class BudgetItem(pytest.Item):
    def __init__(self, *, budgets: BudgetFile, index: int, profile: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budgets, self.index, self.profile = budgets, index, profile

    def runtest(self) -> None:
        from fitplan.advisor.budgets.check import entry_rows, show
        from fitplan.plugin.state import SETTINGS_KEY

        rows = entry_rows(self.budgets, self.index, self.profile, reserve=self.config.stash[SETTINGS_KEY].reserve)
        for r in rows:
            self.user_properties.append((f"fitplan_{r.metric}", show(r.metric, r.predicted)))
        broken = [r for r in rows if not r.ok]
        if broken:
            raise BudgetBroken("; ".join(f"{r.metric}: predicted {show(r.metric, r.predicted)}, limit "
                                         f"{show(r.metric, r.limit)} (line {r.line}: {r.detail})" for r in broken))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: TracebackStyle | None = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, BudgetBroken):
            return f"{self.name}: {excinfo.value}"
        from fitplan.errors import FitplanError

        if isinstance(excinfo.value, FitplanError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, max(0, self.budgets.lines[self.index] - 1), f"fitplan budget: {self.name}"
