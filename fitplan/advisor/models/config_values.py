"""config.json values as fitplan reads them: each checked where it is read, with the architecture's
defaults behind it, and shown in one line when refused."""
from __future__ import annotations

import math
from typing import Any

from fitplan.errors import ModelFileError

MAX_DIM = 2**24  # no real model has a width, vocabulary or context beyond 16.7M


class Config:
    """config.json values with the architecture's defaults behind them, each checked once."""

    def __init__(self, raw: dict[str, Any], defaults: dict[str, Any], where: str) -> None:
        self.raw, self.defaults, self.where = raw, defaults, where

    def get(self, key: str, default: object = None) -> Any:
        value = self.raw.get(key)
        return self.defaults.get(key, default) if value is None else value

    def size(self, key: str, default: int | None = None, *, minimum: int = 1, limit: int = MAX_DIM) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= limit:
            raise ModelFileError(
                f"{self.where}: {key} = {shown(value)} is not a whole number from {minimum} to {limit}"
            )
        return value

    def sizes(self, key: str, layers: int) -> list[int]:
        """One size per layer: a list of num_hidden_layers sizes (Gemma 3n's intermediate_size may be
        one), or one size for every layer."""
        value = self.get(key)
        if not isinstance(value, list):
            return [self.size(key)] * layers
        if len(value) != layers or not all(type(v) is int and 1 <= v <= MAX_DIM for v in value):
            raise ModelFileError(f"{self.where}: {key} = {shown(value)} is not a whole number or a list of "
                                 f"num_hidden_layers = {layers} whole numbers from 1 to {MAX_DIM}")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise ModelFileError(f"{self.where}: {key} = {shown(value)} is not true or false")
        return value

    def optional_size(self, key: str, *, limit: int = MAX_DIM) -> int:
        """A size that may be absent, null or 0 (none): q_lora_rank of DeepSeek-V2-Lite is null."""
        value = self.raw.get(key, self.defaults.get(key))
        return 0 if value is None or value == 0 and type(value) is int else self.size(key, limit=limit)

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.get(key, default)
        if value is not None and not isinstance(value, str):
            raise ModelFileError(f"{self.where}: {key} = {shown(value)} is not a string")
        return value

    def layer_list(self, key: str, layers: int) -> set[int]:
        """A list of layer indices (e.g. mlp_only_layers), each from 0 to layers - 1."""
        value = self.get(key, [])
        if not isinstance(value, list) or len(value) > layers or not all(
                type(i) is int and 0 <= i < layers for i in value):
            raise ModelFileError(f"{self.where}: {key} = {shown(value)} is not a list of at most {layers} "
                                 f"layer indices from 0 to {layers - 1}")
        return set(value)

    def switch(self, setting: bool | str | None) -> bool:
        """A layout switch: a fixed true/false, or the name of the config key that decides."""
        return self.flag(setting) if isinstance(setting, str) else bool(setting)


def shown(value: object, limit: int = 80) -> str:
    """A config value for a one-line message: its repr (control characters escaped), cut to `limit`."""
    if isinstance(value, float) and not math.isfinite(value):  # as config.json spells it
        return f"{value} (JSON {'NaN' if value != value else 'Infinity' if value > 0 else '-Infinity'})"
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} items" if isinstance(value, (list, dict, str)) else f"{len(text)} characters"
    return f"{text[:limit]}... (a {type(value).__name__} of {size})"
