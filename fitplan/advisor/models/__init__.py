"""Where a model comes from: the MODEL argument, file headers (GGUF, safetensors), the hub, the catalog \
and the architecture tables."""
