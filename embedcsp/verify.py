"""Run a compiled program in the functional model and compare it with numpy, bit for bit."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from embedcsp.operator import Operator
from embedcsp.pattern import Pattern
from embedcsp.progress import SILENT, Progress
from embedcsp.reference import Epilogue, reference_output
from embedcsp.targets.vta.codegen import Program, dram_image, output_dram
from embedcsp.targets.vta.decode import decode_program
from embedcsp.targets.vta.encoding import encode_program
from embedcsp.targets.vta.functional import Counters, run


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int  # output elements compared
    mismatches: int
    first_mismatch: str | None
    counters: Counters
    seconds: float

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "mismatches": self.mismatches,
                "first_mismatch": self.first_mismatch, "counters": self.counters.as_dict(),
                "seconds": round(self.seconds, 3)}


def compare(op: Operator, got: np.ndarray, want: np.ndarray, counters: Counters, seconds: float) -> Verification:
    bad = got != want
    first = None
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        first = f"{op.output.name}{list(where)} = {int(got[where])}, expected {int(want[where])}"
    return Verification(not bad.any(), int(want.size), int(bad.sum()), first, counters, seconds)


def execute_image(insns, dram: np.ndarray, cfg, pattern: Pattern, out_dram: np.ndarray,
                  progress: Progress = SILENT) -> tuple[np.ndarray, Counters]:
    """Run, then read the output tensor back through its DRAM map."""
    final, counters = run(list(insns), dram, cfg, pattern, progress)
    return final[out_dram].view(np.int8), counters


@dataclass(frozen=True, eq=False)
class ProgramRun:
    """What one execution of a compiled program gave: its outputs, and their check."""

    outputs: dict[str, np.ndarray]  # output tensor name -> int8 array of its logical shape
    verification: Verification


def run_program(op: Operator, program: Program, pattern: Pattern, epilogue: Epilogue,
                inputs: dict[str, np.ndarray], progress: Progress = SILENT) -> ProgramRun:
    """Execute on `inputs` (logical int8 tensors) and compare every output with the ground truth."""
    start = time.perf_counter()
    dram = dram_image(program, inputs)
    out_dram = output_dram(program, op.output.shape)
    # The model runs the binary as its own decoder reads it, not the compiler's records.
    insns = decode_program(encode_program(list(program.insns), program.config), program.config)
    got, counters = execute_image(insns, dram, program.config, pattern, out_dram, progress)
    want = reference_output(op, inputs, epilogue)
    return ProgramRun({op.output.name: got}, compare(op, got, want, counters, time.perf_counter() - start))


def verify_program(op: Operator, program: Program, pattern: Pattern, epilogue: Epilogue,
                   inputs: dict[str, np.ndarray], progress: Progress = SILENT) -> Verification:
    """`run_program`'s verdict alone (see reference.random_inputs for inputs)."""
    return run_program(op, program, pattern, epilogue, inputs, progress).verification
