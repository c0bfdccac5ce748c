"""The plugin's state: its settings for the session, and what a test records for its budgets (timer
samples and metered tokens, per test item)."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from fitplan.plugin.budgets import Budget


@dataclass(frozen=True)
class Settings:
    hardware: str | None
    report: str | None
    strict: bool
    default_ram: Budget | None
    default_vram: Budget | None
    report_origin: str = ""
    report_force: bool = False
    reserve: str | None = None  # --fitplan-reserve / fitplan_reserve: for predicted budgets without reserve=


SETTINGS_KEY = pytest.StashKey[Settings]()


@dataclass
class TestRecord:
    timer_samples: list[float] = field(default_factory=list)  # seconds, from fitplan_timer
    tokens: int = 0  # from fitplan_meter.record / fitplan_model
    token_seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.token_seconds if self.token_seconds > 0 else None


RECORD_KEY = pytest.StashKey[TestRecord]()


def record_for(node: pytest.Item) -> TestRecord:
    """The test's record, created on first use."""
    if RECORD_KEY not in node.stash:
        node.stash[RECORD_KEY] = TestRecord()
    return node.stash[RECORD_KEY]
