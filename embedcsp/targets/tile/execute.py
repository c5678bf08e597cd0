"""A tile program run as program.bin in the functional model (the family's `execute`).

The records are encoded, and the model reads program.bin with its own decoder, so it runs
what a simulator given the bundle would. Programs up to PER_RECORD_MAX records run in the
per-record model (model.py); longer ones in the batched model (batched.py), which has the
same semantics and hands any program it cannot prove well-ordered to the per-record model,
so refusals read the same.
"""

from __future__ import annotations

import numpy as np

from embedcsp.progress import SILENT, Progress
from embedcsp.targets.tile import model
from embedcsp.targets.tile.codegen import Program
from embedcsp.targets.tile.config import TileConfig
from embedcsp.targets.tile.image import dram_image, output_dram, read_output

PER_RECORD_MAX = 4096


def run_binary(program_bin: bytes, dram: np.ndarray, cfg: TileConfig):
    """(final image, counters) of program.bin on a DRAM image."""
    if len(program_bin) // 64 <= PER_RECORD_MAX:
        return model.run_program(program_bin, dram, cfg)
    from embedcsp.targets.tile.batched import run_program_batched

    return run_program_batched(program_bin, dram, cfg)


def execute(program: Program, op, inputs: dict[str, np.ndarray], progress: Progress = SILENT):
    """(outputs by tensor name, counters) of the program on logical int8 inputs."""
    layout = program.layout
    dram = dram_image(layout, inputs)
    final, counters = run_binary(program.records.tobytes(), dram, program.config)
    got = read_output(final, output_dram(layout, op.output.shape), layout.epilogue)
    return {op.output.name: got}, counters
