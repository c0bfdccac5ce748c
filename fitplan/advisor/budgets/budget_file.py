"""Budgets a repository declares once: `[[tool.fitplan.budget]]` in pyproject.toml or `[[budget]]`
in fitplan.toml, validated with pydantic. Every error names the file, the line (where one can be
found) and the field, in one line.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fitplan.advisor.budgets.vocabulary import LIMITS, PIN_FIELDS
from fitplan.errors import BadValueError
from fitplan.plan_spec import MAX_BATCH, MAX_CONTEXT, MAX_THREADS
from fitplan.units import parse_duration, parse_rate, parse_reserve, parse_size

MAX_BUDGET_FILE_BYTES = 16 * 2**20  # pyproject.toml files run to kilobytes; a larger one is refused, not cut



class Pins(BaseModel):
    """What a budget pins of its plan: the same names and bounds in budget files and pytest markers."""

    model_config = ConfigDict(extra="forbid")

    weights: str | None = Field(default=None, strict=True, min_length=1)
    context: int | None = Field(default=None, strict=True, gt=0, le=MAX_CONTEXT)
    batch: int | None = Field(default=None, strict=True, gt=0, le=MAX_BATCH)
    runtime: str | None = Field(default=None, strict=True, min_length=1)
    kv_cache: str | None = Field(default=None, strict=True, min_length=1)
    threads: int | None = Field(default=None, strict=True, gt=0, le=MAX_THREADS)
    gpu_layers: int | None = Field(default=None, strict=True, ge=0, le=100_000)
    offload: bool = Field(default=False, strict=True)
    reserve: str | None = Field(default=None, strict=True)  # kept free on each GPU, e.g. "2GiB"; "0": none

    @field_validator("reserve")
    @classmethod
    def _reserve(cls, value: str | None) -> str | None:
        if value is not None:
            parse_reserve(value, source="the reserve")
        return value


def check_pins(pins: dict[str, Any], where: str) -> None:
    """One line naming the first pin of the wrong type or out of bounds."""
    try:
        Pins.model_validate(pins)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else "pins"
        raise BadValueError(f"{where}: {key}={pins.get(key)!r}: {error['msg'].removeprefix('Value error, ')}") from None


class BudgetEntry(Pins):
    """One model, its pins, the profiles it targets and the limits it must hold there."""

    name: str | None = None
    model: str = Field(min_length=1)
    hardware: list[str] = Field(min_length=1)
    max_vram: str | None = None
    max_ram: str | None = None
    min_decode_tokens_per_s: str | float | None = None
    min_prefill_tokens_per_s: str | float | None = None
    max_ttft: str | None = None
    max_ppl_increase: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @field_validator("max_vram", "max_ram")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_size(value, source="the limit")
        return value

    @field_validator("max_ttft")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value, source="the limit")
        return value

    @field_validator("min_decode_tokens_per_s", "min_prefill_tokens_per_s")
    @classmethod
    def _rate(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            parse_rate(str(value), source="the limit")
        return value

    @model_validator(mode="after")
    def _has_a_limit(self) -> BudgetEntry:
        if not any(getattr(self, key) is not None for key in LIMITS):
            raise ValueError(f"sets no limit; give at least one of {', '.join(LIMITS)}")
        return self

    def limits(self) -> dict[str, float]:
        """Each limit set, in bytes, seconds, tokens/s or perplexity."""
        out: dict[str, float] = {}
        for key in ("max_vram", "max_ram"):
            if getattr(self, key) is not None:
                out[key] = float(parse_size(getattr(self, key), source=key))
        if self.max_ttft is not None:
            out["max_ttft"] = parse_duration(self.max_ttft, source="max_ttft")
        for key in ("min_decode_tokens_per_s", "min_prefill_tokens_per_s"):
            if getattr(self, key) is not None:
                out[key] = parse_rate(str(getattr(self, key)), source=key)
        if self.max_ppl_increase is not None:
            out["max_ppl_increase"] = float(self.max_ppl_increase)
        return out

    def pins(self) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted((k, getattr(self, k)) for k in PIN_FIELDS if getattr(self, k) not in (None, False)))

    def label(self, index: int) -> str:
        from fitplan.user_files import printable

        model = os.path.basename(self.model.rstrip("/")) if os.sep in self.model else self.model
        return printable(self.name or f"{model}{f' {self.weights}' if self.weights else ''} (budget {index + 1})")


@dataclass(frozen=True)
class BudgetFile:
    path: str
    entries: list[BudgetEntry]
    lines: list[int]  # the line of each entry's table header (1-based; 0 where unknown)
    text: str = ""

    def line_of(self, index: int, field: str) -> int:
        """The line of `field =` in entry `index` (its header line if the field is not written there)."""
        return _field_line(self.text, self.lines, index, field)

    def model_path(self, index: int) -> str:
        """Entry `index`'s model as fitplan opens it: a relative path is beside the budgets file."""
        return beside(self.path, self.entries[index].model)

    def profile_path(self, profile: str) -> str:
        """A target profile as fitplan opens it: a relative profile file (or `Nx` of one) is beside the
        budgets file; a profile name is kept."""
        from fitplan.profiles.named import MULTIPLIED

        match = MULTIPLIED.match(profile)
        if match and not os.path.isfile(beside(self.path, profile)):
            return f"{match[1]}x{beside(self.path, match[2])}"
        return beside(self.path, profile)


PATH_SUFFIXES = (".gguf", ".safetensors", ".toml", ".json")


def beside(config: str, written: str) -> str:
    """`written` (a budget's model or profile) resolved from the budgets file's folder, so `fitplan check
    --config sub/pyproject.toml` reads what the file names wherever it runs. A name that is no file there
    and does not look like a path (a catalog name, a hub id, a profile name) is kept as written."""
    folder = os.path.dirname(config)
    if not folder or os.path.isabs(written):
        return written
    candidate = os.path.join(folder, written)
    if os.path.exists(candidate) or written.startswith(("./", "../")) or written.endswith(PATH_SUFFIXES):
        return os.path.normpath(candidate)
    return written


def find_config(explicit: str | None, cwd: str = ".") -> str:
    """--config, else pyproject.toml in the current directory when it has budgets, else fitplan.toml."""
    if explicit is not None:
        from fitplan.user_files import regular_size

        regular_size(explicit, "--config")
        return explicit
    pyproject, own = os.path.join(cwd, "pyproject.toml"), os.path.join(cwd, "fitplan.toml")
    if os.path.isfile(pyproject) and "tool.fitplan" in _read(pyproject):
        return os.path.normpath(pyproject)
    if os.path.isfile(own):
        return os.path.normpath(own)
    raise BadValueError("no budgets found: add [[tool.fitplan.budget]] tables to pyproject.toml or [[budget]] to "
                        "fitplan.toml here, or pass --config FILE")


def budget_files(files: list[str], explicit: str | None, cwd: str = ".") -> list[str]:
    """The budget files to check: those named (a pyproject.toml without fitplan tables is skipped, as
    pre-commit passes every changed one), else --config, else the default of `find_config`."""
    if files and explicit is not None:
        raise BadValueError("name the budget files, or pass --config, not both")
    if not files:
        return [find_config(explicit, cwd)]
    from fitplan.user_files import regular_size

    for path in files:
        regular_size(path, "budgets file")
    return [p for p in files if os.path.basename(p) != "pyproject.toml" or _has_budgets(p)]


def _has_budgets(pyproject: str) -> bool:
    """Whether a pyproject.toml holds fitplan tables (one that does not parse is kept: its error is shown)."""
    from fitplan.datafiles import parse_toml

    try:
        return "fitplan" in parse_toml(_read(pyproject)).get("tool", {})
    except ValueError:
        return True


def load_budgets(path: str) -> BudgetFile:
    from fitplan.datafiles import parse_toml

    text = _read(path)
    try:
        doc = parse_toml(text)
    except ValueError as exc:  # tomllib names the line and column
        raise BadValueError(f"{path}: not valid TOML: {exc}") from None
    in_pyproject = os.path.basename(path) == "pyproject.toml"
    raw = doc.get("tool", {}).get("fitplan", {}).get("budget") if in_pyproject else doc.get("budget")
    header = r"\[\[\s*tool\.fitplan\.budget\s*\]\]" if in_pyproject else r"\[\[\s*budget\s*\]\]"
    where = "[[tool.fitplan.budget]]" if in_pyproject else "[[budget]]"
    if not isinstance(raw, list) or not raw:
        raise BadValueError(f"{path}: no {where} tables")
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if re.match(rf"\s*{header}", line)]
    lines += [0] * (len(raw) - len(lines))
    entries = []
    for index, table in enumerate(raw):
        try:
            entries.append(BudgetEntry.model_validate(table))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else ""
            line = _field_line(text, lines, index, field)
            message = error["msg"].removeprefix("Value error, ")
            raise BadValueError(f"{path}:{line}: budget {index + 1}, {field or 'entry'}: {message}") from None
    return BudgetFile(path, entries, lines[:len(entries)], text)


def _field_line(text: str, headers: list[int], index: int, field: str) -> int:
    """The line of `field =` inside entry `index`, else the entry's header line."""
    start = headers[index] if index < len(headers) else 0
    following = [h for h in headers if h > start]
    end = following[0] if following else len(text.splitlines()) + 1
    for number, line in enumerate(text.splitlines()[start:end - 1], start=start + 1):
        if field and re.match(rf"\s*{re.escape(field)}\s*=", line):
            return number
    return start


def _read(path: str) -> str:
    """The whole budgets file (a larger one is refused, never read in part: its last budget counts too)."""
    from fitplan.user_files import read_text

    return read_text(path, limit=MAX_BUDGET_FILE_BYTES, what="budgets file")
