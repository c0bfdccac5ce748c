"""vLLM: multi-GPU / multi-node scale-out and its server."""
