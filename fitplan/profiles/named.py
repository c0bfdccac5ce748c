"""Named hardware profiles (data/*.toml, each figure with its source) and user profile files.

A profile holds one `[gpu]` table, or `[[gpu]]` tables for a box with several cards, alike or mixed
(each with an optional `count`, default 1). `Nx<profile>` means N copies of its GPUs on one host, e.g.
`2xrtx-4090-24gb`, or `2x./box.toml` for a file.
"""
from __future__ import annotations

import os
import re
from importlib import resources
from typing import Any

from pydantic import ValidationError

from fitplan.datafiles import load_table, parse_toml
from fitplan.errors import ProfileError
from fitplan.hardware_spec import MAX_GPUS, CPUSpec, GPUSpec, HardwareSpec

MULTIPLIED = re.compile(r"^(\d+)[xX](.+)$")  # `Nx<profile>`: N of every GPU it holds
_PRICE_KEYS = ("price_usd", "price_date", "price_source")
_MAX_PROFILE_BYTES = 1 * 2**20


def profile_names() -> list[str]:
    files = resources.files("fitplan.profiles.data").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def hardware(name: str, *, source: str = "--hardware", beside: str | None = None) -> HardwareSpec:
    """A machine by name: "auto" is this one (free disk measured where `beside`, a model file, lives);
    any other name is a named profile, an `Nx` profile or a profile file."""
    if name == "auto":
        from fitplan.profiles.detect import detect

        return detect(os.path.dirname(os.path.abspath(beside)) if beside and os.path.exists(beside) else None)
    return load_profile(name, source=source)


def load_profile(name_or_path: str, *, source: str = "--hardware") -> HardwareSpec:
    """A named profile, `Nx<name>`, a path to the user's own TOML profile file, or `Nx<path>`."""
    count, base = 1, name_or_path.strip()
    match = MULTIPLIED.match(base)
    if match and not os.path.isfile(base):  # a file named like "2xbox.toml" is that file
        count, base = int(match[1]), match[2]
        if not 1 <= count <= MAX_GPUS:
            raise ProfileError(f"bad GPU count in {name_or_path!r} ({source}): use 1 to {MAX_GPUS}")
    if base.endswith(".toml") or os.sep in base:
        spec = _from_file(base, source)
    elif base.lower() in profile_names():
        spec = _build(load_table("fitplan.profiles.data", f"{base.lower()}.toml"), f"profile {base.lower()}")
    else:
        raise ProfileError(
            f"unknown profile {name_or_path!r} ({source}); run 'fitplan profile --list' to see them, "
            "or pass a path to your own .toml profile"
        )
    if count == 1:
        return spec
    if not spec.gpus:
        raise ProfileError(f"{name_or_path!r} ({source}): {base} has no GPU to multiply")
    if len(spec.gpus) * count > MAX_GPUS:
        raise ProfileError(f"{name_or_path!r} ({source}): {count} x {len(spec.gpus)} GPUs is more than {MAX_GPUS}")
    return spec.model_copy(update={"name": f"{count}x{spec.name}", "gpus": spec.gpus * count})


def _from_file(path: str, source: str) -> HardwareSpec:
    from fitplan.user_files import read_text

    text = read_text(path, limit=_MAX_PROFILE_BYTES, what=f"profile file ({source})", error=ProfileError)
    try:
        data = parse_toml(text)
    except ValueError as exc:
        raise ProfileError(f"profile file {path} ({source}) is not valid TOML: {exc}") from None
    return _build(data, f"profile file {path}")


def _text(value: object) -> Any:
    """A name or description as it may be printed (no terminal escapes); other types fail validation."""
    from fitplan.user_files import printable

    return printable(value) if isinstance(value, str) else value


def _named(table: object) -> Any:
    return {k: _text(v) if k == "name" else v for k, v in table.items()} if isinstance(table, dict) else table


def _build(data: dict[str, Any], where: str) -> HardwareSpec:
    """Validate a profile table (the same schema for shipped and user files)."""
    try:
        ram = data.get("ram", {})
        return HardwareSpec(
            name=_text(data["name"]), description=_text(data.get("description", "")),
            gpus=_gpus(data.get("gpu"), where), cpu=CPUSpec(**_named(data["cpu"])),
            ram_bytes=ram["total_bytes"], sources=tuple(data.get("sources", ())), notes=data.get("notes", ""),
            **{k: data[k] for k in _PRICE_KEYS if k in data},
        )
    except KeyError as exc:
        raise ProfileError(f"{where}: missing key {exc.args[0]!r}") from None
    except (TypeError, AttributeError):
        raise ProfileError(f"{where}: [gpu], [cpu] and [ram] must be tables") from None
    except ValidationError as exc:
        raise ProfileError(f"{where}: {_first_error(exc)}") from None


def _gpus(tables: object, where: str) -> tuple[GPUSpec, ...]:
    """`[gpu]` (one table) or `[[gpu]]` (several): each card `count` times, in file order."""
    if not tables:
        return ()
    many = isinstance(tables, list)
    out: list[GPUSpec] = []
    for i, table in enumerate(tables if isinstance(tables, list) else [tables]):
        field = f"gpu[{i}]" if many else "gpu"
        if not isinstance(table, dict):
            raise ProfileError(f"{where}: {field} must be a table ([[gpu]] with name = ... and memory_bytes = ...)")
        fields = dict(table)
        count = fields.pop("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_GPUS:
            raise ProfileError(f"{where}: {field}.count: {count!r} is not a whole number from 1 to {MAX_GPUS}")
        try:
            out += [GPUSpec(**_named(fields))] * count
        except ValidationError as exc:
            raise ProfileError(f"{where}: {field}.{_first_error(exc)}") from None
    if len(out) > MAX_GPUS:
        raise ProfileError(f"{where}: gpu: {len(out)} GPUs is more than {MAX_GPUS} on one host")
    return tuple(out)


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    return f"{field}: {first['msg']}" if field else first["msg"]
