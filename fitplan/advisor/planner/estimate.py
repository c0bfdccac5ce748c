"""Speed figures for candidate plans: probes and calibration when the target is this machine."""
from __future__ import annotations

from typing import TYPE_CHECKING

from fitplan.advisor.planner.calibration import Calibration, key
from fitplan.advisor.planner.speed import Efficiency, SpeedPrediction, plan_speed
from fitplan.model_spec import ModelSpec
from fitplan.strategies.quantization import tensor_bytes

if TYPE_CHECKING:
    from fitplan.advisor.planner.candidates import Candidate
    from fitplan.hardware_spec import HardwareSpec
    from fitplan.profiles.probes import MachineProbes

TTFT_PROMPT_TOKENS = 512  # the prompt length TTFT and prefill figures assume


def efficiency_for(calibration: Calibration | None, runtime: str, gpu_layers: int) -> Efficiency | None:
    entry = calibration.entries.get(key(runtime, gpu_layers)) if calibration else None
    return Efficiency(entry.decode, entry.prefill, "calibrated") if entry else None


def candidate_speed(spec: ModelSpec, c: Candidate, hw: HardwareSpec, probes: MachineProbes | None,
                    calibration: Calibration | None) -> SpeedPrediction:
    eff = efficiency_for(calibration, c.setup.runtime, c.setup.gpu_layers)
    return plan_speed(spec, c.setup, tensor_bytes(spec, c.fmt), hw, probes=probes, efficiency=eff,
                      prompt_tokens=TTFT_PROMPT_TOKENS)


def machine_context(hw: HardwareSpec) -> tuple[MachineProbes | None, Calibration | None]:
    """This machine's cached probes and calibration when it is the target; none for a named profile."""
    if not hw.detected:
        return None, None
    from fitplan.advisor.planner.calibration import load_calibration
    from fitplan.profiles.probes import fingerprint, load_cached

    return load_cached(hw), load_calibration(fingerprint(hw))
