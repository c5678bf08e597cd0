"""A VTA program run as a binary in the functional model (the family's `execute`).

The program is encoded and read back by the model's own decoder
(targets/vta/decode.py), so the model runs what a board would load.
"""

from __future__ import annotations

import time

import numpy as np

from embedcsp.operator import Operator
from embedcsp.pattern import Pattern
from embedcsp.progress import SILENT, Progress
from embedcsp.reference import Epilogue, reference_output
from embedcsp.targets.vta.codegen import Program, dram_image, output_dram
from embedcsp.targets.vta.decode import decode_program
from embedcsp.targets.vta.encoding import encode_program
from embedcsp.targets.vta.functional import Counters, run
from embedcsp.verify import Verification, compare


def execute_image(insns, dram: np.ndarray, cfg, pattern: Pattern, out_dram: np.ndarray,
                  progress: Progress = SILENT) -> tuple[np.ndarray, Counters]:
    """Run decoded instructions on a DRAM image, then read the output back through its map."""
    final, counters = run(list(insns), dram, cfg, pattern, progress)
    return final[out_dram].view(np.int8), counters


def execute(program: Program, op: Operator, pattern: Pattern, inputs: dict[str, np.ndarray],
            progress: Progress = SILENT) -> tuple[dict[str, np.ndarray], Counters]:
    """The outputs of `program` on logical int8 `inputs`, by output tensor name."""
    dram = dram_image(program, inputs)
    out_dram = output_dram(program, op.output.shape)
    insns = decode_program(encode_program(list(program.insns), program.config), program.config)
    got, counters = execute_image(insns, dram, program.config, pattern, out_dram, progress)
    return {op.output.name: got}, counters


def verify_program(op: Operator, program: Program, pattern: Pattern, epilogue: Epilogue,
                   inputs: dict[str, np.ndarray], progress: Progress = SILENT) -> Verification:
    """Execute and compare every output with the ground truth (tests and tools use it directly)."""
    start = time.perf_counter()
    outputs, counters = execute(program, op, pattern, inputs, progress)
    want = reference_output(op, inputs, epilogue)
    return compare(op, outputs[op.output.name], want, counters, time.perf_counter() - start)
