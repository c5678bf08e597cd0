"""Tile programs: the instruction records, what their addresses mean, and program.bin's writer
(docs/tile.md sections 4-5).

A tile program is a stream of three kinds of instruction, each on its own queue:

    Load     (load queue)     DRAM -> one operand tile in a slot of that operand's memory
    Compute  (compute queue)  out slot (+)= the statement's einsum of an a slot and a b slot
    Store    (store queue)    an output slot -> DRAM, through an epilogue

Each queue runs its instructions one at a time in program order. Across queues
the only ordering is what an instruction states: `after_<queue> = n` means "start
only once the first n instructions of that queue have completed". An
instruction has such a field for each of the two other queues (0: no wait).
These counted waits are the whole synchronisation mechanism: they order any
instruction after any earlier point of another queue, cannot be left over, and
give the functional model an exact happens-before relation to check races
against.

This module is the writing side of program.bin. The functional model reads
program.bin with its own decoder (model.py), which restates the record layout
without this file's formats.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from embedcsp.targets.tile.config import MAX_RANK, TileConfig

LOAD, COMPUTE, STORE = 0, 1, 2
QUEUES = ("load", "compute", "store")
EPILOGUES = ("wrap", "saturate", "int32")  # Store's epilogue codes 0, 1, 2

RECORD_BYTES = 64
OPCODES = {LOAD: 1, COMPUTE: 2, STORE: 3}


@dataclass(frozen=True)
class Load:
    """Gather one tile of `operand` from DRAM into `slot` of that operand's memory.

    Tile element (i_0, ..., i_r-1) is read from byte `dram_offset + sum(i_d * strides[d])`
    when every i_d < valid[d], and is zero otherwise (padding). Strides are in bytes, one
    per dim of the operand in the statement's order; elements have the operand's dtype.
    """

    operand: str
    slot: int
    dram_offset: int
    strides: tuple[int, ...]
    valid: tuple[int, ...]
    after_compute: int = 0
    after_store: int = 0


@dataclass(frozen=True)
class Compute:
    """One instruction: out[out_slot] = (out[out_slot] if accumulate else 0) + einsum(a, b),
    wrapped to the output's dtype."""

    a_slot: int
    b_slot: int
    out_slot: int
    accumulate: bool
    after_load: int = 0
    after_store: int = 0


@dataclass(frozen=True)
class Store:
    """Write the valid part of output tile `slot` to DRAM through an epilogue: 'wrap' (low 8
    bits, one byte), 'saturate' (clipped to int8, one byte) or 'int32' (the value, 4 bytes)."""

    slot: int
    dram_offset: int
    strides: tuple[int, ...]
    valid: tuple[int, ...]
    epilogue: str = "int32"
    after_load: int = 0
    after_compute: int = 0


Insn = Load | Compute | Store


def queue_of(insn: Insn) -> int:
    if isinstance(insn, Load):
        return LOAD
    if isinstance(insn, Compute):
        return COMPUTE
    if isinstance(insn, Store):
        return STORE
    raise TypeError(f"{type(insn).__name__} is not a tile instruction")


def waits(insn: Insn) -> tuple[int, int, int]:
    """(after_load, after_compute, after_store); the instruction's own queue reads 0."""
    return (getattr(insn, "after_load", 0), getattr(insn, "after_compute", 0),
            getattr(insn, "after_store", 0))


def with_wait(insn: Insn, queue: int, n: int) -> Insn:
    """The instruction with its wait on `queue` raised to at least n."""
    field = f"after_{QUEUES[queue]}"
    return replace(insn, **{field: max(getattr(insn, field), n)})


def operand_of(insn: Load | Store, cfg: TileConfig) -> str:
    return insn.operand if isinstance(insn, Load) else cfg.pattern.output.name


def elem_bytes(insn: Load | Store, cfg: TileConfig) -> int:
    """Bytes of one DRAM element: the operand's dtype for a Load, the epilogue's for a Store."""
    if isinstance(insn, Load):
        return cfg.dtype(insn.operand).bytes
    return 4 if insn.epilogue == "int32" else 1


# ---------------------------------------------------------------- addresses

def tile_addresses(dram_offset: int, strides: Sequence[int], valid: Sequence[int],
                   esz: int) -> np.ndarray:
    """Byte addresses of a transfer, shape (*valid, esz), int64, in tile (row-major) order."""
    addr = np.full((), dram_offset, np.int64)
    for d, (s, v) in enumerate(zip(strides, valid)):
        shape = [1] * len(valid)
        shape[d] = v
        addr = addr + (np.arange(v, dtype=np.int64) * s).reshape(shape)
    return addr[..., None] + np.arange(esz, dtype=np.int64)


def span(dram_offset: int, strides: Sequence[int], valid: Sequence[int],
         esz: int) -> tuple[int, int] | None:
    """[lo, hi) bytes a transfer may touch, in Python integers; None if it moves nothing."""
    if any(v == 0 for v in valid):
        return None
    lo = dram_offset + sum(min(0, (v - 1) * s) for s, v in zip(strides, valid))
    hi = dram_offset + sum(max(0, (v - 1) * s) for s, v in zip(strides, valid)) + esz
    return lo, hi


# ---------------------------------------------------------------- encoding

def _name(insn: Insn, field: str) -> str:
    return f"{type(insn).__name__}.{field}"


def _uint(insn: Insn, field: str, bits: int) -> int:
    value = getattr(insn, field)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        # ValueError for every bad field, whatever is wrong with it: one error type to catch.
        raise ValueError(f"{_name(insn, field)}={value!r} is not a whole number")  # noqa: TRY004
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{_name(insn, field)}={value} does not fit u{bits}")
    return int(value)


def _dims(insn: Load | Store, cfg: TileConfig) -> tuple[list[int], list[int]]:
    """strides and valid padded to MAX_RANK, checked against the operand's rank and the fields."""
    name = operand_of(insn, cfg)
    rank = len(cfg.dims_of(name))
    out = []
    for field, lo, hi, kind in (("strides", -(1 << 31), 1 << 31, "i32"), ("valid", 0, 1 << 32, "u32")):
        values = getattr(insn, field)
        if not isinstance(values, (tuple, list)) or len(values) != rank:
            raise ValueError(f"{_name(insn, field)}={values!r}: operand {name} has {rank} dim(s) "
                             f"{cfg.dims_of(name)}, one value each")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v < hi:
                raise ValueError(f"{_name(insn, field)}={values!r}: {v!r} does not fit {kind}")
        out.append([int(v) for v in values] + [0] * (MAX_RANK - rank))
    return out[0], out[1]


def encode(insn: Insn, cfg: TileConfig) -> bytes:
    """One 64-byte record (docs/tile.md section 5); ValueError names the field that does not fit."""
    q = queue_of(insn)
    wait = [_uint(insn, f"after_{QUEUES[k]}", 32) if k != q else 0 for k in range(3)]
    if isinstance(insn, Compute):
        if not isinstance(insn.accumulate, (bool, np.bool_)):
            raise ValueError(f"Compute.accumulate={insn.accumulate!r} is not True/False")  # noqa: TRY004
        head = struct.pack("<4B3I", OPCODES[COMPUTE], 0, int(insn.accumulate), 0, *wait)
        body = struct.pack("<3I", _uint(insn, "a_slot", 32), _uint(insn, "b_slot", 32),
                           _uint(insn, "out_slot", 32))
        return head + body + bytes(RECORD_BYTES - len(head) - len(body))
    if isinstance(insn, Load):
        if insn.operand not in cfg.operand_names:
            raise ValueError(f"Load.operand={insn.operand!r}: the operands are "
                             f"{', '.join(cfg.operand_names)}")
        operand, flags = cfg.operand_index(insn.operand), 0
    else:
        if insn.epilogue not in EPILOGUES:
            raise ValueError(f"Store.epilogue={insn.epilogue!r}: expected one of {', '.join(EPILOGUES)}")
        operand, flags = 2, EPILOGUES.index(insn.epilogue)
    strides, valid = _dims(insn, cfg)
    rank = len(cfg.dims_of(operand_of(insn, cfg)))
    return (struct.pack("<4B3I", OPCODES[q], operand, flags, rank, *wait)
            + struct.pack("<IIQ", _uint(insn, "slot", 32), 0, _uint(insn, "dram_offset", 64))
            + struct.pack(f"<{MAX_RANK}i", *strides) + struct.pack(f"<{MAX_RANK}I", *valid))


def encode_program(insns: Iterable[Insn], cfg: TileConfig) -> bytes:
    """program.bin: the records back to back, no header (docs/tile.md section 5)."""
    return b"".join(encode(insn, cfg) for insn in insns)


# ---------------------------------------------------------------- ordering

def add_waits(insns: Sequence[Insn], cfg: TileConfig) -> list[Insn]:
    """The program with the fewest waits that make it mean what its program order says.

    For every instruction, each other queue's wait is raised to that queue's last
    conflicting access: a write or read of the same slot of the same operand, one of
    them writing, or a Load and a Store whose DRAM byte ranges overlap. Waits the
    instructions already carry are kept. DRAM ranges are compared as whole [lo, hi)
    spans (conservative for interleaved strides), against every earlier transfer of
    the other kind, so the cost is quadratic in transfers: a compiler emitting
    millions of them should track its own.
    """
    count = [0, 0, 0]
    writer: dict[tuple[str, int], tuple[int, int]] = {}  # slot -> (queue, seq) of its last write
    readers: dict[tuple[str, int], list[int]] = {}  # slot -> last reading seq per queue
    transfers: list[list[tuple[int, int, int]]] = [[], [], []]  # per queue: (lo, hi, seq)
    out: list[Insn] = []
    a_name, b_name, o_name = cfg.operand_names
    for insn in insns:
        q = queue_of(insn)
        if isinstance(insn, Load):
            reads, writes = [], [(insn.operand, insn.slot)]
        elif isinstance(insn, Compute):
            reads = [(a_name, insn.a_slot), (b_name, insn.b_slot)]
            reads += [(o_name, insn.out_slot)] if insn.accumulate else []
            writes = [(o_name, insn.out_slot)]
        else:
            reads, writes = [(o_name, insn.slot)], []
        need = [0, 0, 0]
        for key in reads + writes:
            w = writer.get(key)
            if w is not None and w[0] != q:
                need[w[0]] = max(need[w[0]], w[1])
        for key in writes:
            for k, seq in enumerate(readers.get(key, (0, 0, 0))):
                if k != q:
                    need[k] = max(need[k], seq)
        rng = None
        if q != COMPUTE:
            rng = span(insn.dram_offset, insn.strides, insn.valid, elem_bytes(insn, cfg))
            other = STORE if q == LOAD else LOAD
            if rng is not None:
                for lo, hi, seq in transfers[other]:
                    if lo < rng[1] and rng[0] < hi:
                        need[other] = max(need[other], seq)
        for k in range(3):
            if k != q and need[k]:
                insn = with_wait(insn, k, need[k])
        count[q] += 1
        seq = count[q]
        for key in reads:
            readers.setdefault(key, [0, 0, 0])[q] = seq
        for key in writes:
            writer[key] = (q, seq)
        if rng is not None:
            transfers[q].append((rng[0], rng[1], seq))
        out.append(insn)
    return out


def describe_insn(insn: Insn) -> str:
    """One line of a program listing, e.g. for golden text or error messages."""
    def after(i: Any) -> str:
        w = [f"after {QUEUES[k]} {n}" for k, n in enumerate(waits(i)) if n]
        return f" ({', '.join(w)})" if w else ""

    if isinstance(insn, Load):
        return (f"load {insn.operand}[{insn.slot}] <- @{insn.dram_offset} strides {list(insn.strides)}"
                f" valid {list(insn.valid)}{after(insn)}")
    if isinstance(insn, Compute):
        op = "+=" if insn.accumulate else "="
        return f"compute out[{insn.out_slot}] {op} a[{insn.a_slot}] * b[{insn.b_slot}]{after(insn)}"
    return (f"store out[{insn.slot}] -> @{insn.dram_offset} strides {list(insn.strides)} valid "
            f"{list(insn.valid)} {insn.epilogue}{after(insn)}")
