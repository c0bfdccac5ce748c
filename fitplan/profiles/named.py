"""Named hardware profiles (data/*.toml, each figure with its source) and user profile files.

`Nx<profile>` means N identical GPUs on one host, e.g. `2xrtx-4090-24gb`.
"""
from __future__ import annotations

import os
import re
from importlib import resources
from typing import Any

from pydantic import ValidationError

from fitplan.datafiles import load_table, parse_toml
from fitplan.errors import ProfileError
from fitplan.hardware_spec import CPUSpec, GPUSpec, HardwareSpec

_MULTI = re.compile(r"^(\d+)x(.+)$")
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
    """A named profile, `Nx<name>`, or a path to the user's own TOML profile file."""
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        return _from_file(name_or_path, source)
    count, base = 1, name_or_path.strip().lower()
    match = _MULTI.match(base)
    if match:
        count, base = int(match[1]), match[2]
        if not 1 <= count <= 64:
            raise ProfileError(f"bad GPU count in {name_or_path!r} ({source}): use 1 to 64")
    if base not in profile_names():
        raise ProfileError(
            f"unknown profile {name_or_path!r} ({source}); run 'fitplan profile --list' to see them, "
            "or pass a path to your own .toml profile"
        )
    spec = _build(load_table("fitplan.profiles.data", f"{base}.toml"), f"profile {base}")
    if count == 1:
        return spec
    if not spec.gpus:
        raise ProfileError(f"{name_or_path!r} ({source}): {base} has no GPU to multiply")
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
        gpu = data.get("gpu")
        ram = data.get("ram", {})
        return HardwareSpec(
            name=_text(data["name"]), description=_text(data.get("description", "")),
            gpus=(GPUSpec(**_named(gpu)),) if gpu else (), cpu=CPUSpec(**_named(data["cpu"])),
            ram_bytes=ram["total_bytes"], sources=tuple(data.get("sources", ())), notes=data.get("notes", ""),
        )
    except KeyError as exc:
        raise ProfileError(f"{where}: missing key {exc.args[0]!r}") from None
    except (TypeError, AttributeError):
        raise ProfileError(f"{where}: [gpu], [cpu] and [ram] must be tables") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ProfileError(f"{where}: {field}: {first['msg']}") from None
