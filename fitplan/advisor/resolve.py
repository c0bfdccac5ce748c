"""One MODEL argument -> ModelSpec: a .gguf file, a config folder, the catalog, then the hub.

A name without a slash never reaches the network.
"""
from __future__ import annotations

import os

from fitplan.advisor.catalog import catalog_spec
from fitplan.errors import ModelNotFoundError
from fitplan.model_spec import ModelSpec


def resolve_model(arg: str) -> ModelSpec:
    text = arg.strip()
    if not text:
        raise ModelNotFoundError("empty MODEL: pass a .gguf file, a folder with config.json, or a catalog name")
    if text.lower().endswith(".gguf") or os.path.isfile(text):
        if not os.path.isfile(text):
            raise ModelNotFoundError(f"model file {text} does not exist")
        from fitplan.advisor.model_files import gguf_spec

        return gguf_spec(text)
    if os.path.isdir(text):
        if not os.path.isfile(os.path.join(text, "config.json")):
            raise ModelNotFoundError(f"folder {text} has no config.json")
        from fitplan.advisor.model_files import folder_spec

        return folder_spec(text)
    spec = catalog_spec(text)
    if spec is not None:
        return spec
    if "/" in text and not text.startswith((".", "/")) and text.count("/") == 1:
        from fitplan.advisor.hub import hub_spec

        return hub_spec(text)
    raise ModelNotFoundError(
        f"unknown model {text!r}: not a file, a folder or a catalog name; run 'fitplan models' for the "
        "catalog, or pass a hub id such as org/name"
    )
