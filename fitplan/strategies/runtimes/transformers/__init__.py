"""transformers (+accelerate, bitsandbytes)."""
