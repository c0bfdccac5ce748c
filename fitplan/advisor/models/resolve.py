"""One MODEL argument -> ModelSpec: a .gguf file, a config folder, the catalog, then the hub.

A name without a slash never reaches the network.
"""
from __future__ import annotations

import os

from fitplan.advisor.models.catalog import catalog_spec
from fitplan.errors import ModelNotFoundError
from fitplan.model_spec import ModelSpec
from fitplan.user_files import printable


def resolve_model(arg: str) -> ModelSpec:
    text = arg.strip()
    if not text:
        raise ModelNotFoundError("empty MODEL: pass a .gguf file, a folder with config.json, or a catalog name")
    if os.path.isdir(text):
        if not os.path.lexists(os.path.join(text, "config.json")):
            raise ModelNotFoundError(f"folder {printable(text)} has no config.json")
        from fitplan.advisor.models.model_files import folder_spec

        return folder_spec(text)  # a config.json that is no regular file is refused there, by name
    if text.lower().endswith(".gguf") or os.path.lexists(text):
        if not os.path.lexists(text):
            raise ModelNotFoundError(f"model file {printable(text)} does not exist")
        from fitplan.advisor.models.model_files import gguf_spec

        return gguf_spec(text)  # a FIFO, a device or a dangling link is refused there, by name
    spec = catalog_spec(text)
    if spec is not None:
        return spec
    if "/" in text and not text.startswith((".", "/")) and text.count("/") == 1:
        from fitplan.advisor.models.hub import hub_spec

        return hub_spec(text)
    from fitplan.advisor.models.catalog import close_names

    near = close_names(text)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    raise ModelNotFoundError(
        f"unknown model {text!r}: not a file, a folder or a catalog name; {hint}run 'fitplan models' for the "
        "catalog, or pass a hub id such as org/name"
    )
