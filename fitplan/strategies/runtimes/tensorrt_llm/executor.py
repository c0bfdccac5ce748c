"""TensorRT-LLM's Executor (strategies/runtimes/contract.py): `trtllm-serve` for a plan (NVIDIA GPUs only)."""
from __future__ import annotations

from fitplan.plan_spec import RunTarget
from fitplan.strategies.runtimes.servers import ServerExecutor, hf_model, server_missing


class TensorRTLLMExecutor(ServerExecutor):
    name = "tensorrt-llm"
    exports = ("tensorrt-llm",)

    def missing(self) -> str | None:
        return server_missing("tensorrt-llm", "tensorrt_llm", "pip install tensorrt-llm", "TensorRT-LLM",
                              "`fitplan export PLAN --to tensorrt-llm` prints the command")

    def serve_args(self, target: RunTarget, *, port: int, host: str) -> list[str]:
        """trtllm-serve on the Hugging Face checkpoint (its PyTorch backend builds no engine first)."""
        s = target.setup
        return ["trtllm-serve", hf_model(target), "--backend", "pytorch", "--tp_size", str(max(1, s.gpus)),
                "--pp_size", "1", "--max_batch_size", str(s.batch), "--max_seq_len", str(s.context),
                "--host", host, "--port", str(port)]
