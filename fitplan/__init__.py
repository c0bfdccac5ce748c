"""fitplan: will this model fit, and how should it run? `fitplan.load(plan)` runs a plan."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fitplan.advisor.plans.handle import Handle
    from fitplan.advisor.plans.plan_file import PlanFile


def load(source: PlanFile | str | os.PathLike[str], **pins: Any) -> Handle:
    """A Handle that generates as the plan says: a plan file, a PlanFile, or a MODEL to plan for
    this machine (fitplan/advisor/plans/handle.py). Imported on call, so `import fitplan` stays light."""
    from fitplan.advisor.plans.handle import load as _load

    return _load(source, **pins)
