"""The strategies and runtimes of this installation, collected through the pluggy hooks, and what
third-party runtimes add to the built-in tables: their names and aliases, weight formats and options.

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
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from fitplan.errors import BadValueError, FitplanError
from fitplan.strategies.kv_cache import element_bytes, offered_by
from fitplan.strategies.quantization import WeightFormat, all_formats, find_format, format_from_row, format_options
from fitplan.strategies.runtimes.contract import CostModel, Executor, is_cost_model, is_executor
from fitplan.strategies.strategy import Option, Strategy, requirement_from

if TYPE_CHECKING:
    from collections.abc import Iterable

GROUP = "fitplan"
HOOKS = ("fitplan_register_strategies", "fitplan_register_runtimes")


def strategies() -> dict[str, Strategy]:
    return {item.name: item for item in _collect("fitplan_register_strategies")}


@lru_cache(maxsize=1)
def cost_models() -> dict[str, CostModel]:
    """The runtimes advise can plan for, by name: the built-ins first."""
    return _by_name(item for item in _collect("fitplan_register_runtimes", "cost models") if is_cost_model(item))


@lru_cache(maxsize=1)
def executors() -> dict[str, Executor]:
    """The runtimes fitplan can run (or serve), by name."""
    return _by_name(item for item in _collect("fitplan_register_runtimes", "executors") if is_executor(item))


def export_targets() -> list[str]:
    """Every `fitplan export --to` form some registered executor writes, in registration order."""
    return list(dict.fromkeys(to for e in executors().values() for to in e.exports))


def cost_model(name: str) -> CostModel:
    found = cost_models()
    if name not in found:
        raise BadValueError(f"no cost model for runtime {name!r}; known: {', '.join(found)}")
    return found[name]


def runtime_names() -> list[str]:
    """The names plans use for the runtimes advise can plan for (--runtime, the plan file)."""
    return list(cost_models())


def normalize_runtime(name: str) -> str:
    """A runtime's name from its name or an alias, any case (`llamacpp`, `hf`, `ort`)."""
    wanted = name.strip().lower()
    for model in cost_models().values():
        if wanted == model.name.lower() or wanted in model.aliases:
            return model.name
    raise BadValueError(f"unknown runtime {name!r} (--runtime); known: {', '.join(runtime_names())}")


def check_kv_cache(kv_cache: str, runtime: str) -> str:
    """`kv_cache` (lower-cased) when `runtime` offers it; else one line naming the runtimes that do."""
    kv = kv_cache.lower()
    element_bytes(kv)  # an unknown type: the line lists the known ones
    if kv not in cost_model(runtime).kv_cache_types:
        offered = list(offered_by(kv))
        offered += [n for n, m in cost_models().items() if kv in m.kv_cache_types and n not in offered]
        raise BadValueError(f"KV cache type {kv!r} is not offered by {runtime} (offered by: {', '.join(offered)})")
    return kv


def weight_formats() -> dict[str, WeightFormat]:
    """The built-in formats, then those the registered runtimes bring (a built-in's name wins)."""
    return _weight_formats(tuple(cost_models()))


@lru_cache(maxsize=4)
def _weight_formats(_runtimes: tuple[str, ...]) -> dict[str, WeightFormat]:
    out = dict(all_formats())
    for model in cost_models().values():
        for name, row in model.formats.items():
            out.setdefault(name, format_from_row(name, {**row, "runtime": model.name}))
    return out


def weight_format(name: str, *, source: str = "--weights", runtime: str | None = None) -> WeightFormat:
    return find_format(weight_formats(), name, source=source, runtime=runtime)


def options(strategy_name: str) -> list[Option]:
    """A strategy's options, with what third-party runtimes add: their formats and their runtime."""
    return list(_options(strategy_name).values())


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


@cache
def _options(strategy_name: str) -> dict[str, Option]:
    found = {o.name: o for o in strategy(strategy_name).options()}
    builtin = all_formats()
    if strategy_name == "quantization":
        extra = [f for name, f in weight_formats().items() if name not in builtin]
        for o in format_options(extra):
            found.setdefault(o.name, o)
    if strategy_name == "runtime":
        for name, model in cost_models().items():
            row = model.strategy_row
            found.setdefault(name, Option("runtime", name, requirement_from(dict(row), runtimes=(name,)), {},
                                          str(row.get("execute", ""))))
    return found


def executor(name: str) -> Executor:
    found = executors()
    if name not in found:
        raise BadValueError(f"no executor for runtime {name!r}; installed: {', '.join(sorted(found))}")
    return found[name]


def _by_name(items: Iterable[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in items:
        found.setdefault(item.name, item)  # the first registered wins: the built-ins are called first
    return found


@cache
def _collect(hook: str, part: str = "") -> tuple[Any, ...]:
    """What `hook` registers. Without plugins the built-ins are called directly, and only the `part`
    asked for (advise needs the cost models, not the executors' modules)."""
    from fitplan.strategies import builtin

    found: list[Any] = []

    def register(item: object) -> None:
        found.append(item)

    plugins = plugin_entry_points()
    if not plugins:  # the only implementation is the built-in one: call it, no manager needed
        builtin.PARTS.get(part, getattr(builtin, hook))(register)
    else:
        getattr(_manager(tuple(map(tuple, plugins))).hook, hook)(register=register)
    return tuple(found)


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
