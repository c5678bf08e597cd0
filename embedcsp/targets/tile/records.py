"""A whole tile program as one numpy array of 64-byte records (docs/tile.md section 5).

The code generator fills these arrays in bulk, so a program of a million records costs
numpy operations, not a million Python objects. The array's bytes are program.bin;
`to_insns` gives the same program as program.py's records, for the per-record model and
listings, and the tests check that `encode_program(to_insns(r))` is `r.tobytes()`.
"""

from __future__ import annotations

import numpy as np

from embedcsp.targets.tile.config import TileConfig
from embedcsp.targets.tile.program import EPILOGUES, Compute, Insn, Load, Store

# Bytes 16-31 mean (slot, reserved, dram_offset) in a Load or Store and (a_slot, b_slot,
# out_slot, 0) in a Compute: out_slot is the low half of the little-endian u64 at 24.
RECORD = np.dtype([
    ("opcode", "u1"), ("operand", "u1"), ("flags", "u1"), ("rank", "u1"),
    ("after", "<u4", (3,)),
    ("w16", "<u4"), ("w20", "<u4"), ("w24", "<u8"),
    ("strides", "<i4", (4,)), ("valid", "<u4", (4,)),
])
assert RECORD.itemsize == 64
OPCODE = {"load": 1, "compute": 2, "store": 3}
QUEUE_OF_OPCODE = np.array([-1, 0, 1, 2], np.int8)  # opcode -> queue (load, compute, store)


def queues(records: np.ndarray) -> np.ndarray:
    """The queue of every record: 0 load, 1 compute, 2 store."""
    return QUEUE_OF_OPCODE[records["opcode"]]


def to_insns(records: np.ndarray, cfg: TileConfig) -> list[Insn]:
    """program.py's records for the same program."""
    names = cfg.operand_names
    out: list[Insn] = []
    for r in records.tolist():
        opcode, operand, flags, rank, after, w16, w20, w24, strides, valid = r
        if opcode == 2:
            out.append(Compute(w16, w20, w24, bool(flags & 1), after_load=after[0], after_store=after[2]))
        elif opcode == 1:
            out.append(Load(names[operand], w16, w24, tuple(strides[:rank]), tuple(valid[:rank]),
                            after_compute=after[1], after_store=after[2]))
        else:
            out.append(Store(w16, w24, tuple(strides[:rank]), tuple(valid[:rank]), EPILOGUES[flags],
                             after_load=after[0], after_compute=after[1]))
    return out


def counts(records: np.ndarray) -> dict[str, int]:
    """Records per kind."""
    n = np.bincount(records["opcode"], minlength=4)
    return {"load": int(n[1]), "compute": int(n[2]), "store": int(n[3])}
