"""Run a compiled program through its family's functional model and compare it with the
ground truth (embedcsp/reference.py), bit for bit."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedcsp.operator import Operator
from embedcsp.progress import SILENT, Progress
from embedcsp.reference import reference_output
from embedcsp.targets.registry import family


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int  # output elements compared
    mismatches: int
    first_mismatch: str | None
    counters: Any  # the family's execution counters (an as_dict() gives them as JSON)
    seconds: float

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "mismatches": self.mismatches,
                "first_mismatch": self.first_mismatch, "counters": self.counters.as_dict(),
                "seconds": round(self.seconds, 3)}


def compare(op: Operator, got: np.ndarray, want: np.ndarray, counters: Any, seconds: float) -> Verification:
    bad = got != want
    first = None
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        first = f"{op.output.name}{list(where)} = {int(got[where])}, expected {int(want[where])}"
    return Verification(not bad.any(), int(want.size), int(bad.sum()), first, counters, seconds)


@dataclass(frozen=True, eq=False)
class ProgramRun:
    """What one execution of a compiled program gave: its outputs, and their check."""

    outputs: dict[str, np.ndarray]  # output tensor name -> int8 array of its logical shape
    verification: Verification


def run_program(compiled, inputs: dict[str, np.ndarray], progress: Progress = SILENT) -> ProgramRun:
    """Execute `compiled` on logical int8 `inputs` in its family's functional model and
    compare every output with the ground truth of the operator's definition."""
    start = time.perf_counter()
    op = compiled.operator
    outputs, counters = family(compiled.accelerator.family).execute(compiled, inputs, progress)
    want = reference_output(op, inputs, compiled.options.epilogue)
    got = outputs[op.output.name]
    return ProgramRun(outputs, compare(op, got, want, counters, time.perf_counter() - start))
