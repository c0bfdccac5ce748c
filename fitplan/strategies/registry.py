"""The strategies and runtime executors of this installation, collected through the pluggy hooks.

Finding plugins means scanning every installed distribution's entry points (~55 ms here) and
importing pluggy (~30 ms): too much for `advise`'s cold start. So the scan's answer is cached,
keyed by the modification time of every folder on sys.path (installing or removing a package
changes its site-packages folder), and with no plugin installed the built-in hook functions are
called directly; a plugin manager is built only when a plugin is there. Built-ins are called
first; a plugin's strategy or runtime with a built-in's name is ignored (first one wins).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from functools import lru_cache
from typing import Any, Protocol

from fitplan.errors import BadValueError, FitplanError
from fitplan.strategies.strategy import Option, Strategy

GROUP = "fitplan"
HOOKS = ("fitplan_register_strategies", "fitplan_register_runtimes")


class RuntimeExecutor(Protocol):
    """Runs a plan on a real runtime (loaded lazily: nothing heavy is imported before `open`)."""

    name: str

    def missing(self) -> str | None:
        """Why this runtime cannot run here (package absent, no GPU), or None."""

    def open(self, source: Any, setup: Any, *, layers: int) -> Any:
        """Load the model as `setup` says; the result has `run(prompt_tokens, gen_tokens)` and `close()`."""


def strategies() -> dict[str, Strategy]:
    return _collect("fitplan_register_strategies")


def strategy(name: str) -> Strategy:
    found = strategies()
    if name not in found:
        raise BadValueError(f"no strategy {name!r}; installed: {', '.join(found)}")
    return found[name]


def option(strategy_name: str, option_name: str) -> Option:
    found = _options(strategy_name).get(option_name)
    if found is None:
        raise BadValueError(f"strategy {strategy_name!r} has no option {option_name!r}")
    return found


@lru_cache(maxsize=None)
def _options(strategy_name: str) -> dict[str, Option]:
    return {o.name: o for o in strategy(strategy_name).options()}


def executor(name: str) -> RuntimeExecutor:
    found = _collect("fitplan_register_runtimes")
    if name not in found:
        raise BadValueError(f"no executor for runtime {name!r}; installed: {', '.join(sorted(found))}")
    return found[name]


@lru_cache(maxsize=None)
def _collect(hook: str) -> dict[str, Any]:
    from fitplan.strategies import builtin

    found: dict[str, Any] = {}

    def register(item: Any) -> None:
        found.setdefault(item.name, item)

    plugins = plugin_entry_points()
    if not plugins:  # the only implementation is the built-in one: call it, no manager needed
        getattr(builtin, hook)(register)
    else:
        getattr(_manager(tuple(map(tuple, plugins))).hook, hook)(register=register)
    return found


@lru_cache(maxsize=1)
def _manager(plugins: tuple[tuple[str, str], ...]) -> Any:
    import importlib

    import pluggy

    from fitplan.strategies import builtin, hookspecs

    manager = pluggy.PluginManager(GROUP)
    manager.add_hookspecs(hookspecs)
    for name, value in plugins:
        module_name, _, attribute = value.partition(":")
        try:
            plugin = importlib.import_module(module_name)
            plugin = getattr(plugin, attribute) if attribute else plugin
            manager.register(plugin, name=f"plugin:{name}")
        except Exception as exc:  # a broken third-party plugin: say which, in one line
            raise FitplanError(f"fitplan plugin {name!r} ({value}) failed to load: {type(exc).__name__}: {exc}") from None
    for hook in HOOKS:
        hookspecs.hookimpl(getattr(builtin, hook))
    manager.register(builtin, name="builtin")  # registered last, so pluggy calls it first
    return manager


def plugin_entry_points() -> list[list[str]]:
    """[name, "module[:attr]"] of every `fitplan` entry point, from the cache when sys.path is unchanged."""
    from fitplan.cachedir import cache_dir

    where = [sys.version, sys.prefix, sys.path]
    key = _path_mtimes()
    digest = hashlib.sha256(json.dumps(where).encode()).hexdigest()[:16]
    path = cache_dir(create=False) / "plugins" / f"{digest}.json"  # one per interpreter and sys.path
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") == key and isinstance(cached.get("entry_points"), list):
            return [[str(n), str(v)] for n, v in cached["entry_points"]]
    except (OSError, ValueError, TypeError, AttributeError):
        pass  # missing, stale or damaged: scan again
    from importlib.metadata import entry_points

    found = sorted([ep.name, ep.value] for ep in entry_points(group=GROUP))
    try:
        from fitplan.atomic_file import write_atomic

        write_atomic(path, json.dumps({"key": key, "entry_points": found}))
    except OSError:
        pass  # a read-only cache only costs the next run another scan
    return found


def _path_mtimes() -> list[Any]:
    out: list[Any] = []
    for entry in sys.path:
        try:
            out.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            out.append([entry, None])
    return out
