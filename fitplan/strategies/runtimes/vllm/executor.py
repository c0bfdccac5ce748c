"""vLLM's Executor (strategies/runtimes/contract.py): `vllm serve` for a plan (NVIDIA GPUs only)."""
from __future__ import annotations

from fitplan.plan_spec import RunTarget
from fitplan.strategies.runtimes.servers import ServerExecutor, hf_model, server_missing
from fitplan.strategies.runtimes.transformers.cost import TORCH_DTYPES


class VllmExecutor(ServerExecutor):
    name = "vllm"
    exports = ("vllm",)

    def missing(self) -> str | None:
        return server_missing("vllm", "vllm", "pip install vllm", "vLLM", "`fitplan export PLAN --to vllm` prints the command")

    def serve_args(self, target: RunTarget, *, port: int, host: str) -> list[str]:
        s = target.setup
        return ["vllm", "serve", hf_model(target), "--dtype", TORCH_DTYPES.get(s.weights, "bfloat16"), "--max-model-len",
                str(s.context), "--tensor-parallel-size", str(max(1, s.gpus)), "--max-num-seqs", str(s.batch),
                "--host", host, "--port", str(port)]
