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
from embedcsp.targets.vta.codegen import Program, dram_image
from embedcsp.targets.vta.encoding import encode_program
from embedcsp.targets.vta.functional import Counters, run, run_binary
from embedcsp.verify import Verification, compare


def execute_image(insns, dram: np.ndarray, cfg, pattern: Pattern, out_dram: np.ndarray,
                  progress: Progress = SILENT) -> tuple[np.ndarray, Counters]:
    """Run instructions (records, or a program.bin as bytes) on a DRAM image, then read the
    output back through its map."""
    if isinstance(insns, (bytes, bytearray)):
        final, counters = run_binary(bytes(insns), dram, cfg, pattern, progress)
    else:
        final, counters = run(list(insns), dram, cfg, pattern, progress)
    return final[out_dram].view(np.int8), counters


def execute(program: Program, op: Operator, pattern: Pattern, inputs: dict[str, np.ndarray],
            progress: Progress = SILENT) -> tuple[dict[str, np.ndarray], Counters]:
    """The outputs of `program` on logical int8 `inputs`, by output tensor name."""
    dram = dram_image(program, inputs)
    raw = encode_program(list(program.insns), program.config)  # the model reads the binary
    final, counters = run_binary(raw, dram, program.config, pattern, progress)
    return {op.output.name: read_output(program, final, op.output.shape)}, counters


def read_output(program: Program, final: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The output tensor from a final DRAM image, through the program's map of the OUT region
    (the inverse of codegen's output_dram, scattered with the map's own int32 indices instead of
    building an int64 address per element: for 50M outputs that was seconds)."""
    emap = program.element_maps["acc"].reshape(-1)  # OUT region byte -> output element, -1 = padding
    region = program.regions["out"]
    data = final[region.offset:region.offset + emap.size].view(np.int8)
    held = emap >= 0
    if not held.all():
        emap, data = emap[held], data[held]
    size = int(np.prod(shape))
    placed = np.zeros(size, bool)
    placed[emap] = True
    assert placed.all(), "an output element has no place in DRAM"
    out = np.empty(size, np.int8)
    out[emap] = data
    return out.reshape(shape)


def verify_program(op: Operator, program: Program, pattern: Pattern, epilogue: Epilogue,
                   inputs: dict[str, np.ndarray], progress: Progress = SILENT) -> Verification:
    """Execute and compare every output with the ground truth (tests and tools use it directly)."""
    start = time.perf_counter()
    outputs, counters = execute(program, op, pattern, inputs, progress)
    want = reference_output(op, inputs, epilogue)
    return compare(op, outputs[op.output.name], want, counters, time.perf_counter() - start)
