"""fitplan's extension points (pluggy). Built-in strategies and runtimes implement the same hooks a
third-party plugin does: an installed package with a module under the `fitplan` entry-point group
is loaded and its hook implementations called (strategies/registry.py)."""
from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("fitplan")
hookimpl = pluggy.HookimplMarker("fitplan")


@hookspec
def fitplan_register_strategies(register: Callable[[Any], None]) -> None:
    """Call register(strategy) for each strategy (strategies/strategy.py: name, summary, options())."""


@hookspec
def fitplan_register_runtimes(register: Callable[[Any], None]) -> None:
    """Call register(executor) for each runtime executor this plugin provides."""
