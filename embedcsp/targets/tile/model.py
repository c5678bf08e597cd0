"""Bit-exact functional model of tile programs, and its own reader of program.bin
(docs/tile.md sections 5-7).

The model runs the load, compute and store queues as the hardware would (each
in program order, each until its next instruction waits on another queue) and
applies the description's statement itself: a Compute is the pattern's einsum
over the two input tiles, in exact int64 arithmetic, wrapped to the output's
dtype. It refuses, with a ProgramError naming the instruction:
  - a record that does not fit the description (operand, rank, valid extents,
    epilogue), a slot beyond its operand's memory;
  - a DRAM access outside the image, a Store whose elements overlap each other;
  - a read of a slot nothing wrote;
  - a race: two queues touching one slot (or one DRAM byte: a Load and a Store),
    one writing, with no chain of waits ordering them. Vector clocks make the
    check independent of the order the model happens to run the queues in;
  - a deadlock: a wait that can never be met.
Each instruction is one vectorised numpy operation (no Python loop per element).

The decoder below restates the record layout offset by offset and shares no
format with program.py, which writes program.bin: if either side misreads the
layout, programs fail instead of agreeing with themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedcsp.errors import ProgramError
from embedcsp.targets.tile.config import DType, TileConfig
from embedcsp.targets.tile.program import (
    COMPUTE,
    LOAD,
    QUEUES,
    STORE,
    Compute,
    Insn,
    Load,
    Store,
    elem_bytes,
    queue_of,
    span,
    tile_addresses,
    waits,
)

# ---------------------------------------------------------------- decoding (docs/tile.md 5)

RECORD = 64
DIMS = 4  # dims a Load/Store record has room for
_EPILOGUE_CODES = {0: "wrap", 1: "saturate", 2: "int32"}
_OPCODE_QUEUE = {1: LOAD, 2: COMPUTE, 3: STORE}


def _u(rec: bytes, at: int, size: int) -> int:
    return int.from_bytes(rec[at:at + size], "little")


def _i32(rec: bytes, at: int) -> int:
    return int.from_bytes(rec[at:at + 4], "little", signed=True)


def _zero(rec: bytes, lo: int, hi: int, what: str) -> None:
    if any(rec[lo:hi]):
        raise ValueError(f"bytes {lo}..{hi - 1} ({what}) must be zero, got {rec[lo:hi].hex()}")


def decode_record(rec: bytes, cfg: TileConfig) -> Insn:
    """One 64-byte record; ValueError for anything the layout does not allow."""
    opcode, operand, flags, rank = rec[0], rec[1], rec[2], rec[3]
    after = {"load": _u(rec, 4, 4), "compute": _u(rec, 8, 4), "store": _u(rec, 12, 4)}
    if opcode not in _OPCODE_QUEUE:
        raise ValueError(f"opcode {opcode} is none of 1 (load), 2 (compute), 3 (store)")
    own = QUEUES[_OPCODE_QUEUE[opcode]]
    if after[own]:
        raise ValueError(f"a {own} instruction waits on its own queue (after_{own} = {after[own]}); "
                         "a queue is ordered by program order alone")
    if opcode == 2:
        if operand or rank:
            raise ValueError(f"compute has operand byte {operand} and rank byte {rank}; both must be 0")
        if flags > 1:
            raise ValueError(f"compute flags {flags:#04x}: only bit 0 (accumulate) exists")
        _zero(rec, 28, RECORD, "unused by compute")
        return Compute(a_slot=_u(rec, 16, 4), b_slot=_u(rec, 20, 4), out_slot=_u(rec, 24, 4),
                       accumulate=bool(flags), after_load=after["load"], after_store=after["store"])
    names = (cfg.pattern.inputs[0].name, cfg.pattern.inputs[1].name, cfg.pattern.output.name)
    if opcode == 1 and operand > 2:
        raise ValueError(f"load operand byte {operand}: 0, 1 (the inputs) or 2 (the output)")
    if opcode == 3 and operand != 2:
        raise ValueError(f"store operand byte {operand}: a store reads the output (2)")
    if opcode == 1 and flags:
        raise ValueError(f"load flags {flags:#04x} must be 0")
    if opcode == 3 and flags not in _EPILOGUE_CODES:
        raise ValueError(f"store epilogue code {flags}: 0 wrap, 1 saturate, 2 int32")
    name = names[operand]
    dims = cfg.pattern.operand(name).dims
    if rank != len(dims):
        raise ValueError(f"rank byte {rank}, but operand {name} has {len(dims)} dim(s)")
    _zero(rec, 20, 24, "reserved")
    strides = tuple(_i32(rec, 32 + 4 * d) for d in range(DIMS))
    valid = tuple(_u(rec, 48 + 4 * d, 4) for d in range(DIMS))
    if any(strides[rank:]) or any(valid[rank:]):
        raise ValueError(f"stride or valid fields beyond the operand's {rank} dim(s) are not zero")
    slot, offset = _u(rec, 16, 4), _u(rec, 24, 8)
    if opcode == 1:
        return Load(operand=name, slot=slot, dram_offset=offset, strides=strides[:rank],
                    valid=valid[:rank], after_compute=after["compute"], after_store=after["store"])
    return Store(slot=slot, dram_offset=offset, strides=strides[:rank], valid=valid[:rank],
                 epilogue=_EPILOGUE_CODES[flags], after_load=after["load"],
                 after_compute=after["compute"])


def decode_program(raw: bytes, cfg: TileConfig) -> list[Insn]:
    """A whole program.bin; ValueError naming the record for any bad one."""
    if len(raw) % RECORD:
        raise ValueError(f"program is {len(raw)} bytes, not a whole number of {RECORD}-byte records")
    out = []
    for pc in range(len(raw) // RECORD):
        try:
            out.append(decode_record(bytes(raw[pc * RECORD:(pc + 1) * RECORD]), cfg))
        except ValueError as exc:
            raise ValueError(f"record {pc}: {exc}") from None
    return out


# ---------------------------------------------------------------- arithmetic

def wrap(x: np.ndarray, dt: DType) -> np.ndarray:
    """Two's-complement (or unsigned) wrap of int64 values to the type's width, kept as int64."""
    bits = 8 * dt.bytes
    x = np.asarray(x, np.int64) & ((1 << bits) - 1)
    if dt.signed:
        x = np.where(x > dt.hi, x - (1 << bits), x)
    return x


def epilogue(values: np.ndarray, kind: str) -> np.ndarray:
    """The bytes a Store writes for these output values, shape (*values.shape, element bytes)."""
    values = np.asarray(values, np.int64)
    if kind == "wrap":
        out = (values & 0xFF).astype(np.uint8)
    elif kind == "saturate":
        out = np.clip(values, -128, 127).astype(np.int8)
    else:  # int32: every output dtype of the family fits
        out = values.astype("<i4")
    return np.ascontiguousarray(out).view(np.uint8).reshape(*values.shape, out.itemsize)


# ---------------------------------------------------------------- counters

@dataclass(frozen=True)
class Counters:
    """What one run did: instructions per queue, DRAM bytes moved, MACs issued."""

    insns: dict[str, int]
    load_bytes: int   # bytes Loads read from DRAM (padding is not read)
    store_bytes: int  # bytes Stores wrote
    macs: int         # Computes x the statement's MACs, padding included

    @property
    def gemm_uops(self) -> int:
        """Instruction instances executed: the name the core's reports and bench CSV use."""
        return self.insns.get("compute", 0)

    def as_dict(self) -> dict:
        return {"insns": dict(self.insns), "load_bytes": self.load_bytes,
                "store_bytes": self.store_bytes, "macs": self.macs}


# ---------------------------------------------------------------- the machine

def _what(pc: int, insn: Insn) -> str:
    return f"instruction {pc} ({QUEUES[queue_of(insn)]})"


def _whole(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_record(pc: int, insn: Insn, cfg: TileConfig) -> None:
    """Everything about one record that does not depend on the run (docs/tile.md section 7)."""
    try:
        q = queue_of(insn)
    except TypeError:
        raise ProgramError(f"instruction {pc}: {type(insn).__name__} is not a tile instruction") from None
    what = _what(pc, insn)
    for k, n in enumerate(waits(insn)):
        if k != q and (not _whole(n) or n < 0):
            raise ProgramError(f"{what}: after_{QUEUES[k]} = {n!r} is not a count >= 0")

    def slot(name: str, field: str, value) -> None:
        n = cfg.slots(name)
        if not _whole(value) or value < 0:
            raise ProgramError(f"{what}: {field} = {value!r} is not a slot number")
        if value >= n:
            raise ProgramError(f"{what}: {field} = {value} is beyond the memory of {name}: "
                               f"{cfg.capacity(name)} B hold {n} tile(s) of {cfg.tile_bytes(name)} B "
                               f"(slots 0..{n - 1})")

    if isinstance(insn, Compute):
        a, b, o = cfg.operand_names
        slot(a, "a_slot", insn.a_slot)
        slot(b, "b_slot", insn.b_slot)
        slot(o, "out_slot", insn.out_slot)
        if not isinstance(insn.accumulate, (bool, np.bool_)):
            raise ProgramError(f"{what}: accumulate = {insn.accumulate!r} is not True/False")
        return
    if isinstance(insn, Load):
        if insn.operand not in cfg.operand_names:
            raise ProgramError(f"{what}: operand {insn.operand!r} is none of "
                               f"{', '.join(cfg.operand_names)}")
        name = insn.operand
    else:
        name = cfg.pattern.output.name
        if insn.epilogue not in _EPILOGUE_CODES.values():
            raise ProgramError(f"{what}: epilogue {insn.epilogue!r} is none of wrap, saturate, int32")
    slot(name, "slot", insn.slot)
    dims, shape = cfg.dims_of(name), cfg.tile_shape(name)
    for field in ("strides", "valid"):
        values = getattr(insn, field)
        if not isinstance(values, (tuple, list)) or len(values) != len(dims) or not all(
                _whole(v) for v in values):
            raise ProgramError(f"{what}: {field} = {values!r}; operand {name} needs one whole number "
                               f"per dim {dims}")
    for d, v, e in zip(dims, insn.valid, shape):
        if not 0 <= v <= e:
            raise ProgramError(f"{what}: valid extent {v} of dim {d} is outside 0..{e} (the lane extent)")
    if not _whole(insn.dram_offset) or insn.dram_offset < 0:
        raise ProgramError(f"{what}: dram_offset = {insn.dram_offset!r} is not a byte address")


class _Machine:
    """Slots, DRAM and the happens-before bookkeeping of one run."""

    def __init__(self, cfg: TileConfig, dram: np.ndarray, queues: list[list[tuple[int, Insn]]]):
        self.cfg, self.dram, self.queues = cfg, dram, queues
        self.tiles: dict[tuple[str, int], np.ndarray] = {}
        # Per slot: (queue, seq) of its last write, and the last reading seq of each queue.
        self.writer: dict[tuple[str, int], tuple[int, int]] = {}
        self.readers: dict[tuple[str, int], list[int]] = {}
        # Per DRAM byte: seq of the last Load that read it and of the last Store that wrote it
        # (only Loads and Stores touch DRAM, so two arrays are enough).
        self.dram_read = np.zeros(len(dram), np.int32)
        self.dram_written = np.zeros(len(dram), np.int32)
        self.insns = {name: 0 for name in QUEUES}
        self.load_bytes = self.store_bytes = self.macs = 0

    def pc(self, queue: int, seq: int) -> int:
        return self.queues[queue][seq - 1][0]

    def _ref(self, queue: int, seq: int) -> str:
        return f"instruction {self.pc(queue, seq)} ({QUEUES[queue]})"

    # ---- slots
    def read_slot(self, what: str, key: tuple[str, int], q: int, seq: int, vc) -> np.ndarray:
        if key not in self.tiles:
            raise ProgramError(f"{what}: reads slot {key[1]} of {key[0]}, which nothing wrote before it")
        wq, ws = self.writer[key]
        if wq != q and ws > vc[wq]:
            raise ProgramError(f"race on slot {key[1]} of {key[0]}: {what} reads what "
                               f"{self._ref(wq, ws)} writes, and no wait orders the two")
        self.readers.setdefault(key, [0, 0, 0])[q] = seq
        return self.tiles[key]

    def write_slot(self, what: str, key: tuple[str, int], q: int, seq: int, vc,
                   value: np.ndarray) -> None:
        if key in self.writer:
            wq, ws = self.writer[key]
            if wq != q and ws > vc[wq]:
                raise ProgramError(f"race on slot {key[1]} of {key[0]}: {what} overwrites what "
                                   f"{self._ref(wq, ws)} writes, and no wait orders the two")
        for k, rs in enumerate(self.readers.get(key, (0, 0, 0))):
            if k != q and rs > vc[k]:
                raise ProgramError(f"race on slot {key[1]} of {key[0]}: {what} overwrites what "
                                   f"{self._ref(k, rs)} reads, and no wait orders the two")
        self.writer[key] = (q, seq)
        self.tiles[key] = value

    # ---- DRAM
    def _addresses(self, what: str, insn: Load | Store) -> np.ndarray | None:
        esz = elem_bytes(insn, self.cfg)
        rng = span(insn.dram_offset, insn.strides, insn.valid, esz)
        if rng is None:
            return None
        if rng[0] < 0 or rng[1] > len(self.dram):
            raise ProgramError(f"{what}: touches DRAM bytes [{rng[0]}, {rng[1]}), outside the "
                               f"{len(self.dram)}-byte image")
        return tile_addresses(insn.dram_offset, insn.strides, insn.valid, esz)

    # ---- instructions
    def load(self, what: str, insn: Load, seq: int, vc) -> None:
        cfg, name = self.cfg, insn.operand
        dt = cfg.dtype(name)
        tile = np.zeros(cfg.tile_shape(name), np.int64)
        addr = self._addresses(what, insn)
        if addr is not None:
            flat = addr.reshape(-1)
            racing = self.dram_written[flat] > vc[STORE]
            if racing.any():
                byte = int(flat[np.argmax(racing)])
                raise ProgramError(f"race on DRAM byte {byte}: {what} reads what "
                                   f"{self._ref(STORE, int(self.dram_written[byte]))} writes, and "
                                   "no wait orders the two")
            self.dram_read[flat] = seq
            raw = np.ascontiguousarray(self.dram[addr])
            tile[tuple(slice(0, v) for v in insn.valid)] = raw.view(dt.numpy)[..., 0]
            self.load_bytes += raw.size
        self.write_slot(what, (name, insn.slot), LOAD, seq, vc, tile)

    def compute(self, what: str, insn: Compute, seq: int, vc) -> None:
        cfg = self.cfg
        a_name, b_name, o_name = cfg.operand_names
        a = self.read_slot(what, (a_name, insn.a_slot), COMPUTE, seq, vc)
        b = self.read_slot(what, (b_name, insn.b_slot), COMPUTE, seq, vc)
        out = cfg.pattern.contract(a, b, "", "", "")  # int64 einsum: exact (config.EXACT_LIMIT)
        if insn.accumulate:
            out = out + self.read_slot(what, (o_name, insn.out_slot), COMPUTE, seq, vc)
        self.write_slot(what, (o_name, insn.out_slot), COMPUTE, seq, vc,
                        wrap(out, cfg.dtype(o_name)))
        self.macs += cfg.macs

    def store(self, what: str, insn: Store, seq: int, vc) -> None:
        name = self.cfg.pattern.output.name
        tile = self.read_slot(what, (name, insn.slot), STORE, seq, vc)
        addr = self._addresses(what, insn)
        if addr is None:
            return
        flat = addr.reshape(-1)
        if np.unique(flat).size != flat.size:
            raise ProgramError(f"{what}: its elements overlap in DRAM (strides "
                               f"{list(insn.strides)} with {addr.shape[-1]}-byte elements), so the "
                               "bytes written would depend on the order of writes")
        racing = self.dram_read[flat] > vc[LOAD]
        if racing.any():
            byte = int(flat[np.argmax(racing)])
            raise ProgramError(f"race on DRAM byte {byte}: {what} overwrites what "
                               f"{self._ref(LOAD, int(self.dram_read[byte]))} reads, and no wait "
                               "orders the two")
        data = epilogue(np.asarray(tile)[tuple(slice(0, v) for v in insn.valid)], insn.epilogue)
        self.dram[flat] = data.reshape(-1)
        self.dram_written[flat] = seq
        self.store_bytes += data.size


# ---------------------------------------------------------------- entry points

def run(insns: Sequence[Insn], dram: np.ndarray, cfg: TileConfig) -> tuple[np.ndarray, Counters]:
    """Execute a program on a copy of the DRAM image (byte 0 = address 0); return the final image
    and counters. ProgramError for anything the model refuses (docs/tile.md section 7)."""
    dram = np.asarray(dram)
    if dram.dtype != np.uint8 or dram.ndim != 1:
        raise ProgramError(f"the DRAM image must be a flat uint8 array, got {dram.dtype} of shape "
                           f"{dram.shape}")
    queues: list[list[tuple[int, Insn]]] = [[], [], []]
    for pc, insn in enumerate(insns):
        check_record(pc, insn, cfg)
        queues[queue_of(insn)].append((pc, insn))
    if max(len(q) for q in queues) >= 1 << 31:
        raise ProgramError("a queue holds 2^31 instructions or more, beyond the model's counters")
    for entries in queues:
        for pc, insn in entries:
            for k, n in enumerate(waits(insn)):
                if n > len(queues[k]):
                    raise ProgramError(f"deadlock: {_what(pc, insn)} waits for {n} {QUEUES[k]} "
                                       f"instruction(s), but the program has {len(queues[k])}")
    m = _Machine(cfg, dram.copy(), queues)
    clocks: list[list[tuple[int, int, int]]] = [[], [], []]  # vector clock of each executed insn
    pos = [0, 0, 0]
    while any(pos[q] < len(queues[q]) for q in range(3)):
        moved = False
        for q in (LOAD, COMPUTE, STORE):
            while pos[q] < len(queues[q]):
                pc, insn = queues[q][pos[q]]
                w = waits(insn)
                if any(pos[k] < w[k] for k in range(3) if k != q):
                    break
                # What this instruction is ordered after: its queue's previous instruction and
                # the instructions it waits for, with everything they were ordered after.
                vc = list(clocks[q][-1]) if clocks[q] else [0, 0, 0]
                for k in range(3):
                    if k != q and w[k]:
                        vc = [max(x, y) for x, y in zip(vc, clocks[k][w[k] - 1])]
                seq = pos[q] + 1
                vc[q] = seq
                what = _what(pc, insn)
                if q == LOAD:
                    m.load(what, insn, seq, vc)
                elif q == COMPUTE:
                    m.compute(what, insn, seq, vc)
                else:
                    m.store(what, insn, seq, vc)
                m.insns[QUEUES[q]] += 1
                clocks[q].append(tuple(vc))
                pos[q] += 1
                moved = True
        if not moved:
            stuck = []
            for q in range(3):
                if pos[q] < len(queues[q]):
                    pc, insn = queues[q][pos[q]]
                    need = ", ".join(f"{n} {QUEUES[k]} (done {pos[k]})"
                                     for k, n in enumerate(waits(insn)) if k != q and pos[k] < n)
                    stuck.append(f"{_what(pc, insn)} waits for {need}")
            raise ProgramError("deadlock: " + "; ".join(stuck))
    return m.dram, Counters(dict(m.insns), m.load_bytes, m.store_bytes, m.macs)


def run_program(program: bytes, dram: np.ndarray, cfg: TileConfig) -> tuple[np.ndarray, Counters]:
    """Decode program.bin with the model's own reader, then `run` it."""
    try:
        insns = decode_program(program, cfg)
    except ValueError as exc:
        raise ProgramError(f"program.bin: {exc}") from None
    return run(insns, dram, cfg)
