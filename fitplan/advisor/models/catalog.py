"""The built-in model catalog (data/catalog.toml): real config.json contents, each with its source."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from fitplan.advisor.models.architectures import spec_from_config
from fitplan.datafiles import load_table
from fitplan.model_spec import ModelSpec


@lru_cache(maxsize=1)
def _index() -> dict[str, dict[str, Any]]:
    """Every name an entry answers to (short name, hub ids, former names), lower-cased."""
    index: dict[str, dict[str, Any]] = {}
    for entry in load_table("fitplan.advisor.models.data", "catalog.toml")["model"]:
        for key in (entry["name"], *entry.get("hub_ids", []), *entry.get("aliases", [])):
            index[key.lower()] = entry
    return index


def catalog_names() -> list[str]:
    return [entry["name"] for entry in load_table("fitplan.advisor.models.data", "catalog.toml")["model"]]


def close_names(text: str, limit: int = 3) -> list[str]:
    """Catalog names a mistyped or shortened name probably meant: names it begins or that begin it
    (a hub id's tail counts), else the nearest spelling (difflib), at most `limit`."""
    import difflib

    tail = text.strip().lower().rsplit("/", 1)[-1]
    found = [n for n in catalog_names() if n.startswith(tail) or tail.startswith(n)]
    by_tail = {k.rsplit("/", 1)[-1]: e["name"] for k, e in _index().items()}  # short names are their own tail
    for near in [] if found else difflib.get_close_matches(tail, by_tail, n=1, cutoff=0.75):
        found.append(by_tail[near])
    return list(dict.fromkeys(found))[:limit]


def catalog_entry(name: str) -> dict[str, Any] | None:
    return _index().get(name.strip().lower())


def catalog_spec(name: str) -> ModelSpec | None:
    """The spec of a catalog model, or None when `name` is not in the catalog."""
    entry = catalog_entry(name)
    if entry is None:
        return None
    config = {**entry["config"], **{key: None for key in entry.get("null_keys", [])}}
    hub_ids = entry.get("hub_ids") or [None]
    return spec_from_config(config, name=entry["name"], source="catalog", location=entry["name"], hub_id=hub_ids[0])
