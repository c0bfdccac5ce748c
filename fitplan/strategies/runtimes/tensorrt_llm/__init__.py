"""TensorRT-LLM: its OpenAI-compatible server (trtllm-serve) for a plan."""
