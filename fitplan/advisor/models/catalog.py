"""The built-in model catalog (data/catalog/*.toml): real config.json contents, each with its source.

Entries answer to their short name, hub ids (base and instruct), former names and the names users
type in Ollama and LM Studio (aliases). `advise <short name>` is the common first command, so a short
name is found by a line scan of the files (~4 ms) and only the file holding it is parsed (~17 ms for
the largest, ~77 ms for all eight, measured here); any other name parses them all once.
"""
from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

from fitplan.advisor.models.architectures import spec_from_config
from fitplan.datafiles import load_table
from fitplan.model_spec import ModelSpec

_PACKAGE = "fitplan.advisor.models.data"
_NAME_LINE = re.compile(r'^name = "([^"]+)"$', re.M)
# Ollama tags: name:size[-variant][-quantization], e.g. llama3.1:8b-instruct-q4_K_M (ollama.com/library)
_OLLAMA_SUFFIX = re.compile(r"-(instruct|chat|text|base|it|thinking)?(-?(q\d\w*|fp16|bf16|f16|mxfp4))?$", re.I)


@cache
def catalog_files() -> tuple[str, ...]:
    folder = resources.files(_PACKAGE).joinpath("catalog")
    return tuple(sorted(f"catalog/{p.name}" for p in folder.iterdir() if p.name.endswith(".toml")))


def _entries(filename: str) -> list[dict[str, Any]]:
    return list(load_table(_PACKAGE, filename).get("model", []))


@cache
def _short_names() -> dict[str, str]:
    """Short name (lower-cased) -> the catalog file holding it, by a scan of the `name = "..."` lines."""
    out: dict[str, str] = {}
    for filename in catalog_files():
        text = resources.files(_PACKAGE).joinpath(filename).read_text(encoding="utf-8")
        for name in _NAME_LINE.findall(text):
            out[name.lower()] = filename
    return out


@cache
def _index() -> dict[str, dict[str, Any]]:
    """Every name an entry answers to (short name, hub ids, aliases), lower-cased."""
    index: dict[str, dict[str, Any]] = {}
    for entry in all_entries():
        for key in (entry["name"], *entry.get("hub_ids", []), *entry.get("aliases", [])):
            index[key.lower()] = entry
    return index


def all_entries() -> list[dict[str, Any]]:
    return [entry for filename in catalog_files() for entry in _entries(filename)]


def catalog_names() -> list[str]:
    return [entry["name"] for entry in all_entries()]


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
    key = name.strip().lower()
    filename = _short_names().get(key)
    if filename is not None:
        return next(e for e in _entries(filename) if e["name"].lower() == key)
    index = _index()
    if key in index:
        return index[key]
    if ":" in key:  # an Ollama tag with its variant or quantization: llama3.1:8b-instruct-q4_K_M -> llama3.1:8b
        base = _OLLAMA_SUFFIX.sub("", key)
        return index.get(base) or (index.get(key.split(":")[0]) if key.endswith(":latest") else None)
    return None


def catalog_spec(name: str) -> ModelSpec | None:
    """The spec of a catalog model, or None when `name` is not in the catalog. A hub id asked for is the
    repository its weights come from (an instruct model is not its base)."""
    entry = catalog_entry(name)
    if entry is None:
        return None
    key = name.strip().lower()
    repos = [r for r in (*entry.get("hub_ids", []), *entry.get("aliases", [])) if "/" in r]
    asked = next((r for r in repos if r.lower() == key), None)
    other = {k.lower(): repo for k, repo in entry.get("alias_repos", {}).items()}  # a tag of another release
    return entry_spec(entry, hub_id=asked or other.get(key) or other.get(_OLLAMA_SUFFIX.sub("", key)))


def entry_spec(entry: dict[str, Any], hub_id: str | None = None) -> ModelSpec:
    config = entry_config(entry)
    hub_ids = entry.get("hub_ids") or [None]
    return spec_from_config(config, name=entry["name"], source="catalog", location=entry["name"],
                            hub_id=hub_id or hub_ids[0])


def entry_config(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry's config.json with its JSON nulls put back (TOML has none): "a.b" in null_keys names
    a key inside a nested table."""
    config = dict(entry["config"])
    for key in entry.get("null_keys", []):
        outer, _, inner = key.partition(".")
        if inner and isinstance(config.get(outer), dict):
            config[outer] = {**config[outer], inner: None}
        else:
            config[key] = None
    return config
