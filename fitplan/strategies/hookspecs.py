"""fitplan's extension points (pluggy). Built-in strategies and runtimes implement the same hooks a
third-party plugin does: an installed package with a module under the `fitplan` entry-point group
is loaded and its hook implementations called (strategies/registry.py)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("fitplan")
hookimpl = pluggy.HookimplMarker("fitplan")


@hookspec
def fitplan_register_strategies(register: Callable[[Any], None]) -> None:
    """Call register(strategy) for each strategy (strategies/strategy.py: name, summary, options())."""


@hookspec
def fitplan_register_runtimes(register: Callable[[Any], None]) -> None:
    """Call register(item) for each runtime this plugin provides: its CostModel (advise plans for it) and
    its Executor (fitplan run / verify / export run it), both in strategies/runtimes/contract.py."""
