"""fitplan: will this model fit, and how should it run? `fitplan.load(plan)` runs a plan."""
from __future__ import annotations

from typing import Any


def load(source: Any, **pins: Any) -> Any:
    """A Handle that generates as the plan says: a plan file, a PlanFile, or a MODEL to plan for
    this machine (fitplan/advisor/plans/handle.py). Imported on call, so `import fitplan` stays light."""
    from fitplan.advisor.plans.handle import load as _load

    return _load(source, **pins)
