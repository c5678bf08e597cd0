"""The tile family's ISA layer (docs/tile.md): a generic accelerator whose one instruction is any
einsum `out[...] += a[...] * b[...]` over fixed lane extents, with per-operand scratch memories
and one DMA engine.

    config.py    TileConfig and the ISA-file loader (tile_from_dict, load_tile, tile_accelerator)
    program.py   Load / Compute / Store records, counted waits between queues, program.bin's
                 writer, add_waits (the waits that make program order hold)
    model.py     the functional model's own reader of program.bin, and the bit-exact model
    timing.py    the cycle model and the roofline

and the compiler seam (docs/tile.md section 10):

    blocked.py   the embedded operator as a blocked product of tiles per operand
    plan.py      blocks that fit the slot rings, the loop order, the estimate
    codegen.py   a plan to one array of records (records.py) with waits computed in bulk,
                 and the DRAM layout
    image.py     the host side: the DRAM image, corrections for uint8 inputs, outputs read
                 back, layout.npz
    build.py     the best program, ranked by the cycle model (fastsim.py, over the arrays)
    execute.py, batched.py
                 program.bin run in the model, record by record or in bulk
    bundle.py, report.py
                 the family's part of bundles and reports

`FAMILY` is what the registry (embedcsp/targets/registry.py) hands the core.
"""

import numpy as np

from embedcsp.targets.family import PackageParts
from embedcsp.targets.tile.config import (
    DTYPES,
    DType,
    TileConfig,
    describe,
    load_tile,
    tile_accelerator,
    tile_config_from_dict,
    tile_from_dict,
)
from embedcsp.targets.tile.model import Counters, decode_program, run, run_program
from embedcsp.targets.tile.program import (
    COMPUTE,
    EPILOGUES,
    LOAD,
    QUEUES,
    RECORD_BYTES,
    STORE,
    Compute,
    Insn,
    Load,
    Store,
    add_waits,
    describe_insn,
    encode,
    encode_program,
)
from embedcsp.targets.tile.timing import Roofline, Timing, roofline, simulate


class TileFamily(PackageParts):
    """The stages the core asks of a family, for any instruction a tile ISA file states."""

    name = "tile"
    reference = None  # a generic instruction has no fixed mapping to compare with
    forms: tuple = ()
    # What a Store can write (docs/tile.md section 6); the first, the whole sum, is the default.
    epilogues = ("int32", "wrap", "saturate")
    boards = ("generic",)  # no real board: cycles of the description, seconds at a nominal 1 GHz
    default_board = "generic"

    def load(self, doc: dict, source: str):
        """An ISA file's five tables to an Accelerator (docs/tile.md section 1)."""
        return tile_from_dict(doc, source)

    def describe(self, acc) -> list[str]:
        """Lanes, memories and slots, the DMA width (for `embedcsp isa show`)."""
        return describe(acc.config)

    def check_board(self, name: str) -> None:
        """The tile family has no boards: its cycle model counts cycles of the description alone
        (seconds at a nominal 1 GHz). The core's default board name is accepted as "none"."""
        from embedcsp.errors import BadInput

        if name not in self.boards:
            raise BadInput(f"the tile family has no board {name!r}: its cycle model needs only the ISA "
                           "file (cycles; seconds at a nominal 1 GHz); leave --board out or give 'generic'")

    def reference_pins(self, op):
        """There is no fixed mapping to compare with on a generic instruction."""
        from embedcsp.errors import NoEmbedding

        raise NoEmbedding("the tile family has no reference mapping; use --strategy csp")

    def build(self, embedding, options):
        """(plan, program): the best program for the embedding under the options."""
        from embedcsp.targets.tile.build import best_program

        return best_program(embedding, options)

    def execute(self, compiled, inputs, progress=None):
        """(outputs by tensor name, counters): program.bin run in the functional model."""
        from embedcsp.targets.tile.execute import execute

        return execute(compiled.program, compiled.operator, inputs)

    def cost(self, compiled):
        """The cycle model's verdict on the program (docs/tile.md section 8)."""
        from embedcsp.targets.tile.fastsim import simulate_records
        from embedcsp.targets.tile.report import TileTiming

        t = simulate_records(compiled.program.records, compiled.program.config)
        return TileTiming(t.cycles, t.busy, t.compute_cycles)

    def roofline(self, compiled):
        """Every useful MAC at the peak rate; every element the operator really reads
        (embedcsp/footprint.py) moved once in its operand's type, every output element once as
        the epilogue writes it (docs/roofline.md)."""
        from embedcsp.footprint import footprint
        from embedcsp.targets.tile.plan import store_bytes

        program, op = compiled.program, compiled.operator
        cfg, layout = program.config, program.layout
        fp = footprint(op)
        nbytes = fp.written * store_bytes(layout.epilogue)
        for q in cfg.operand_names[:2]:
            nbytes += fp.of(layout.tensors[q]) * cfg.dtype(q).bytes
        return roofline(op.macs, nbytes, cfg)


FAMILY = TileFamily()

__all__ = [
    "FAMILY",
    "COMPUTE",
    "DTYPES",
    "EPILOGUES",
    "LOAD",
    "QUEUES",
    "RECORD_BYTES",
    "STORE",
    "Compute",
    "Counters",
    "DType",
    "Insn",
    "Load",
    "Roofline",
    "Store",
    "TileConfig",
    "Timing",
    "add_waits",
    "decode_program",
    "describe",
    "describe_insn",
    "encode",
    "encode_program",
    "load_tile",
    "roofline",
    "run",
    "run_program",
    "simulate",
    "tile_accelerator",
    "tile_config_from_dict",
    "tile_from_dict",
]
