"""`fitplan.load(plan)`: a loaded model that generates as the plan says, with metering.

The handle hides the runtime: `stream` yields text pieces as they are produced, `generate` joins
them, `generate_batch` runs several prompts, and `metering` counts tokens and seconds over the
handle's life. Stop strings are handled here, the same for every runtime.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from fitplan.advisor.plans.plan_file import PlanFile, check_fingerprint, load_plan, plan_from_advice, run_target
from fitplan.errors import BadValueError, RuntimeMissingError
from fitplan.strategies.runtimes.contract import Session


class Handle:
    def __init__(self, plan: PlanFile, session: Session) -> None:
        self.plan = plan
        self._session: Session | None = session
        self.tokens_in = self.tokens_out = self.calls = 0
        self.seconds = 0.0

    def stream(self, prompt: str, *, max_tokens: int = 128, stop: Iterable[str] = ()) -> Iterator[str]:
        """Text pieces as the runtime produces them (greedy); ends at max_tokens, the end of text or a stop string."""
        stops = [s for s in stop if s]
        hold = max((len(s) for s in stops), default=1) - 1  # text that may still become a stop string
        text, emitted, counted = "", 0, 0
        start = time.perf_counter()
        self.calls += 1
        session = self._open()
        self.tokens_in += session.count_tokens(prompt, prompt=True)
        pieces = session.stream(prompt, max_tokens)
        try:
            for piece, tokens in pieces:
                text, counted = text + piece, counted + tokens
                cut = min((i for s in stops if (i := text.find(s)) >= 0), default=-1)
                if cut >= 0:
                    if cut > emitted:
                        yield text[emitted:cut]
                    text = text[:cut]
                    if not counted:  # the runtime counts at the end, which a stop string cuts off
                        counted = session.count_tokens(text, prompt=False)
                    return
                if len(text) - hold > emitted:
                    yield text[emitted:len(text) - hold]
                    emitted = len(text) - hold
            if len(text) > emitted:
                yield text[emitted:]
        finally:
            pieces.close()
            self.tokens_out += counted
            self.seconds += time.perf_counter() - start

    def _open(self) -> Session:
        if self._session is None:
            raise BadValueError("this fitplan handle is closed: load the plan again")
        return self._session

    def generate(self, prompt: str, *, max_tokens: int = 128, stop: Iterable[str] = ()) -> str:
        return "".join(self.stream(prompt, max_tokens=max_tokens, stop=stop))

    def generate_batch(self, prompts: Iterable[str], *, max_tokens: int = 128, stop: Iterable[str] = ()) -> list[str]:
        """One completion per prompt, in order (llama-cpp-python and generate() run them one after another)."""
        return [self.generate(p, max_tokens=max_tokens, stop=stop) for p in prompts]

    @property
    def metering(self) -> dict[str, Any]:
        rate = self.tokens_out / self.seconds if self.seconds else 0.0
        return {"calls": self.calls, "prompt_tokens": self.tokens_in, "generated_tokens": self.tokens_out,
                "seconds": round(self.seconds, 4), "generated_tokens_per_s": round(rate, 2)}

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load(source: PlanFile | str | os.PathLike[str], **pins: Any) -> Handle:
    """A plan file (or a PlanFile), or a MODEL that advise plans for this machine first."""
    from fitplan.strategies.registry import executor

    plan = source if isinstance(source, PlanFile) else resolve_plan(os.fspath(source), **pins)
    check_fingerprint(plan)
    runner = executor(plan.plan.runtime)
    missing = runner.missing()
    if missing:
        raise RuntimeMissingError(missing)
    return Handle(plan, runner.session(run_target(plan)))


def resolve_plan(source: str, **pins: Any) -> PlanFile:
    """A plan from a plan file, or the plan advise makes for MODEL on this machine."""
    if source.endswith(".json") and os.path.isfile(source):
        return load_plan(source)
    from fitplan.advisor.models.resolve import resolve_model
    from fitplan.advisor.planner.document import advice_document
    from fitplan.advisor.planner.estimate import machine_context
    from fitplan.advisor.planner.solver import Request, advise
    from fitplan.profiles.named import hardware

    spec = resolve_model(source)
    hw = hardware("auto", beside=spec.location)
    probes, calibration = machine_context(hw)
    advice = advise(spec, hw, Request(**pins), probes=probes, calibration=calibration)
    return plan_from_advice(advice_document(spec, hw, advice, top=0))
