"""The Gemmini family (docs/gemmini.md): Gemmini's systolic array driven by RoCC commands,
described by the seven gemmini_config values of an ISA file.

    config.py      the description, the pattern of one preload/compute pair, the loader
    commands.py    command records and their encoding (the compiler's writer)
    decode.py      the functional model's own reader of program.bin (records and arrays)
    model.py       the bit-exact functional model, one command at a time
    batch.py       the same model on whole runs of commands (millions of computes)
    plan.py, codegen.py, build.py
                   tiling into scratchpad and accumulator, WS/OS code generation, the best program
    timing.py      the cycle model and the roofline
    reference.py   the pins of Gemmini's own C library mapping (--strategy reference)
    bundle.py, report.py
                   the family's bundle fields and files, its report lines

`FAMILY` is what the registry (embedcsp/targets/registry.py) hands the core.
"""

from __future__ import annotations

import numpy as np

from embedcsp.accelerator import Accelerator
from embedcsp.progress import SILENT, Progress
from embedcsp.targets.family import PackageParts
from embedcsp.targets.gemmini.commands import (
    GARBAGE,
    OS,
    WS,
    Command,
    ComputeAccumulated,
    ComputePreloaded,
    ConfigEx,
    ConfigLd,
    ConfigSt,
    Flush,
    Mvin,
    Mvout,
    Preload,
    encode,
    encode_program,
    epilogue_readout,
    f32_bits,
    local_addr,
)
from embedcsp.targets.gemmini.config import (
    GemminiConfig,
    gemmini_config_from_dict,
    gemmini_config_from_toml,
    load_gemmini_config,
)
from embedcsp.targets.gemmini.decode import decode_program
from embedcsp.targets.gemmini.model import Counters, run, run_program


class GemminiFamily(PackageParts):
    """The stages the core asks of a family, for Gemmini."""

    name = "gemmini"
    reference = ("Gemmini's C library mapping (rows = M or output pixels, columns = N or output "
                 "channels, reduction = K or input channels, filter taps as loops), solved pinned")
    forms: tuple = ()  # only the packed matrix form
    epilogues = ("saturate", "requant/nearest_even", "int32")
    default_board = "chipyard"  # timing.DEFAULT_BOARD: a nominal 1 GHz Chipyard SoC

    def load(self, doc: dict, source: str) -> Accelerator:
        """An ISA file's tables ([accelerator], [gemmini_config]) to an Accelerator."""
        from embedcsp.targets.gemmini.config import gemmini_from_dict

        return gemmini_from_dict(doc, source)

    def describe(self, acc: Accelerator) -> list[str]:
        """What the family derives from the description: memories, limits, the instruction."""
        from embedcsp.targets.gemmini.plan import os_chain
        from embedcsp.targets.gemmini.timing import BEAT_BYTES, BOARDS

        cfg = acc.config
        d = cfg.DIM
        return [
            f"array      {d}x{d} PEs; one preload/compute pair: C[{d}x{d}] += A[{d}x{cfg.red_lanes}] . "
            f"B[{cfg.red_lanes}x{d}], {d * d * cfg.red_lanes} MACs",
            f"scratchpad {cfg.sp_rows} rows of {d} {cfg.elem_t} ({cfg.sp_bytes // 1024} KiB); "
            f"accumulator {cfg.acc_rows} rows of {d} {cfg.acc_t} ({cfg.acc_capacity_bytes // 1024} KiB)",
            f"moves      mvin/mvout <= {cfg.max_cols_elem} int8 columns ({cfg.max_block_len} blocks), "
            f"int32 mvout <= {cfg.max_cols_full_mvout} columns; rows <= {d}",
            f"limits     20-bit in-array sums: <= 31 products per output; OS chains of "
            f"{os_chain(cfg)} computes; local rows {cfg.sp_addr_bits}/{cfg.acc_addr_bits} bits",
            f"epilogues  {', '.join(self.epilogues)}",
            f"boards     {', '.join(f'{b.name} ({b.clock_mhz:g} MHz)' for b in BOARDS.values())}, "
            f"DMA {BEAT_BYTES} B/cycle",
        ]

    def check_board(self, name: str) -> None:
        from embedcsp.targets.gemmini.timing import board

        board(name)

    def reference_pins(self, op):
        from embedcsp.targets.gemmini.reference import reference_pins

        return reference_pins(op)

    def build(self, embedding, options):
        """(plan, program): the best program for the embedding under the options."""
        from embedcsp.targets.gemmini.build import best_program

        return best_program(embedding, options.epilogue, options.board, options.plan_candidates,
                            options.double_buffer)

    def modelled_cycles(self, embedding, options) -> int:
        """The cycles of the program `build` would return, without its element maps."""
        from embedcsp.targets.gemmini.build import best_program

        plan, _ = best_program(embedding, options.epilogue, options.board, options.plan_candidates,
                               options.double_buffer, with_maps=False)
        return plan.estimated_cycles

    def execute(self, compiled, inputs: dict[str, np.ndarray], progress: Progress = SILENT):
        """(outputs by tensor name, counters): program.bin as the hardware reads it, decoded by
        the model's own reader and run on the DRAM image, outputs read through the maps."""
        from embedcsp.errors import ProgramError
        from embedcsp.targets.gemmini.batch import run_pieces
        from embedcsp.targets.gemmini.codegen import (
            dram_image,
            output_dram,
            read_output,
        )
        from embedcsp.targets.gemmini.decode import read_entries

        program, op = compiled.program, compiled.operator

        def pieces():
            # program.bin as the hardware reads it, a piece at a time: encoded, then decoded by
            # the model's own reader, so memory stays bounded whatever the program's length.
            for chunk in program.chunks():
                try:
                    yield read_entries(chunk.to_bytes(), chunk.start)
                except ValueError as exc:
                    raise ProgramError(f"program.bin: {exc}") from None

        dram = dram_image(program, inputs)
        final, counters = run_pieces(pieces(), len(program), dram, program.dram_base, program.config,
                                     progress)
        out = read_output(final, output_dram(program, op.output.shape), program.out_bytes)
        return {op.output.name: out}, counters

    def cost(self, compiled):
        from embedcsp.targets.gemmini.timing import board, cost_program

        return cost_program(compiled.program, compiled.plan, board(compiled.options.board))

    def roofline(self, compiled):
        from embedcsp.targets.gemmini.timing import board, roofline

        return roofline(compiled.operator, compiled.accelerator.config, compiled.program.out_bytes,
                        board(compiled.options.board))


FAMILY = GemminiFamily()

__all__ = [
    "FAMILY", "GARBAGE", "OS", "WS", "Command", "ComputeAccumulated", "ComputePreloaded", "ConfigEx",
    "ConfigLd", "ConfigSt", "Counters", "Flush", "GemminiConfig", "GemminiFamily", "Mvin", "Mvout",
    "Preload", "decode_program", "encode", "encode_program", "epilogue_readout", "f32_bits",
    "gemmini_config_from_dict", "gemmini_config_from_toml", "load_gemmini_config", "local_addr",
    "run", "run_program",
]
