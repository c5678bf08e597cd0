"""The tile family's ISA layer (docs/tile.md): a generic accelerator whose one instruction is any
einsum `out[...] += a[...] * b[...]` over fixed lane extents, with per-operand scratch memories
and one DMA engine.

    config.py    TileConfig and the ISA-file loader (tile_from_dict, load_tile, tile_accelerator)
    program.py   Load / Compute / Store records, counted waits between queues, program.bin's
                 writer, add_waits (the waits that make program order hold)
    model.py     the functional model's own reader of program.bin, and the bit-exact model
    timing.py    the cycle model and the roofline

The compiler seam that plans and emits tile programs lives elsewhere, and the
registry does not list the family yet; this package only knows the ISA.
"""

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

__all__ = [
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
