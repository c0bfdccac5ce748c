"""fitplan's extension points (pluggy). Built-in runtimes register through the same hooks a
third-party plugin would use: an installed package exposing a module under the `fitplan` entry
point group is loaded and its hook implementations called."""
from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("fitplan")
hookimpl = pluggy.HookimplMarker("fitplan")


@hookspec
def fitplan_register_runtimes(register: Callable[[Any], None]) -> None:
    """Call register(executor) for each runtime executor this plugin provides."""
