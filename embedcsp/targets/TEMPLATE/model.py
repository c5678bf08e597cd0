"""The TEMPLATE machine's functional model, and its own reader of program.bin.

The reader restates the record layout (docs/template-family.md) offset by offset and shares
nothing with build.py, which writes it: if either side misreads the format, programs fail
instead of agreeing with themselves. It refuses (ValueError, naming the record) anything the
format does not allow.

The machine has one int32 accumulator tile, zero at start. An MMA reads its first input's
tile (bat, row, red) and its second input's tile (bat, col, red) from DRAM, applies the
instruction's own statement to them (`Pattern.contract`, exact in int64), and either starts
the accumulator from that product or, with ACCUMULATE, adds it (wrapping at 32 bits); with
WRITEBACK it then writes the accumulator through the CONFIG record's epilogue to output tile
(bat, row, col). Records run in program order; the model runs them in batches with numpy,
which gives the same result because input regions are never written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedcsp.errors import ProgramError

from .config import TemplateConfig

SIZE = 32  # bytes per record
EPILOGUES = {0: "int32", 1: "wrap", 2: "saturate"}


def _u32(raw: np.ndarray, at: int) -> np.ndarray:
    """Little-endian u32 at byte `at` of every record, as int64."""
    b = raw[:, at:at + 4].astype(np.int64)
    return b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)


@dataclass(frozen=True, eq=False)
class Decoded:
    """program.bin as the machine reads it."""

    epilogue: str
    counts: tuple[int, int, int, int]  # instances along bat, row, col, red
    bases: tuple[int, int, int]  # byte offsets of the A, B and O regions
    index: np.ndarray  # int64 [mmas, 4]: each MMA's (bat, row, col, red)
    flags: np.ndarray  # uint8 [mmas]: ACCUMULATE 1, WRITEBACK 2

    def __len__(self) -> int:
        return 1 + len(self.flags)  # records, the CONFIG included


def decode(data: bytes, cfg: TemplateConfig) -> Decoded:
    """Every record checked; ValueError naming the first that breaks the format."""
    if len(data) % SIZE or not data:
        raise ValueError(f"program.bin is {len(data)} bytes, not a positive number of {SIZE}-byte records")
    raw = np.frombuffer(data, np.uint8).reshape(-1, SIZE)

    def bad(rows: np.ndarray, what: str) -> ValueError:
        return ValueError(f"record {int(np.flatnonzero(rows)[0])}: {what}")

    opcode = raw[:, 0]
    if opcode[0] != 1:
        raise ValueError(f"record 0 has opcode {opcode[0]}; a program starts with CONFIG (1)")
    if (opcode[1:] != 2).any():
        raise bad(np.r_[False, opcode[1:] != 2], "opcode is not MMA (2); only record 0 is a CONFIG")
    if raw[:, 2:4].any():
        raise bad(raw[:, 2:4].any(1), "bytes 2..3 must be zero")
    if int(raw[0, 1]) not in EPILOGUES:
        raise ValueError(f"record 0: epilogue code {raw[0, 1]} is none of 0 (int32), 1 (wrap), 2 (saturate)")
    counts = tuple(int(_u32(raw[:1], 4 + 4 * k)[0]) for k in range(4))
    bases = tuple(int(_u32(raw[:1], 20 + 4 * k)[0]) for k in range(3))
    if min(counts) < 1:
        raise ValueError(f"record 0: instance counts {counts} must all be at least 1")
    mma = raw[1:]
    flags = mma[:, 1]
    if (flags > 3).any():
        raise bad(np.r_[False, flags > 3], "flags other than ACCUMULATE (1) and WRITEBACK (2)")
    if mma[:, 20:].any():
        raise bad(np.r_[False, mma[:, 20:].any(1)], "bytes 20..31 of an MMA must be zero")
    index = np.stack([_u32(mma, 4 + 4 * k) for k in range(4)], 1) if len(mma) else np.zeros((0, 4), np.int64)
    beyond = (index >= np.array(counts)).any(1)
    if beyond.any():
        raise bad(np.r_[False, beyond], f"tile index beyond the CONFIG's counts {counts}")
    return Decoded(EPILOGUES[int(raw[0, 1])], counts, bases, index, flags.copy())


def regions(d: Decoded, cfg: TemplateConfig) -> list[tuple[int, int]]:
    """[start, end) bytes of the A, B and O regions the CONFIG record implies."""
    nb, nr, nc, nk = d.counts
    a, b, o = cfg.operand_names
    width = 4 if d.epilogue == "int32" else 1
    sizes = (nb * nr * nk * cfg.tile_lanes(a), nb * nc * nk * cfg.tile_lanes(b),
             nb * nr * nc * cfg.tile_lanes(o) * width)
    return [(base, base + size) for base, size in zip(d.bases, sizes)]


def check_fits(d: Decoded, cfg: TemplateConfig, dram_bytes: int) -> None:
    """ValueError unless the three regions lie inside the image and apart."""
    spans = regions(d, cfg)
    for name, (lo, hi) in zip(("A", "B", "O"), spans):
        if hi > dram_bytes:
            raise ValueError(f"record 0: region {name} [{lo}, {hi}) lies outside the {dram_bytes}-byte image")
    for i in range(3):
        for j in range(i + 1, 3):
            if spans[i][0] < spans[j][1] and spans[j][0] < spans[i][1]:
                raise ValueError(f"record 0: regions {'ABO'[i]} and {'ABO'[j]} overlap")


@dataclass(frozen=True)
class Counters:
    """What one run did."""

    records: int
    mmas: int
    writebacks: int
    macs: int  # MMAs x the statement's MACs, padding lanes included
    load_bytes: int  # input tile bytes read
    store_bytes: int  # output tile bytes written

    @property
    def gemm_uops(self) -> int:
        """Instruction instances executed: the name the core's reports and bench CSV use."""
        return self.mmas

    def as_dict(self) -> dict:
        return {"records": self.records, "mmas": self.mmas, "writebacks": self.writebacks,
                "macs": self.macs, "load_bytes": self.load_bytes, "store_bytes": self.store_bytes}


def _tiles(dram: np.ndarray, span: tuple[int, int], cfg: TemplateConfig, operand: str) -> np.ndarray:
    """An input region as int8 [tiles, *operand dims in the statement's order]."""
    p = cfg.pattern
    stored = cfg.storage_dims(operand)
    own = p.operand(operand).dims
    arr = dram[span[0]:span[1]].view(np.int8).reshape(-1, *(p.extents[x] for x in stored))
    return arr.transpose(0, *(1 + stored.index(x) for x in own))


def _epilogue(acc: np.ndarray, kind: str) -> np.ndarray:
    """The accumulator (int64, already wrapped to int32 values) as the O region stores it."""
    if kind == "int32":
        return acc.astype("<i4").view(np.uint8)
    if kind == "wrap":
        return acc.astype(np.int8).view(np.uint8)
    return np.clip(acc, -128, 127).astype(np.int8).view(np.uint8)


def run(d: Decoded, dram: np.ndarray, cfg: TemplateConfig, chunk_bytes: int = 1 << 26) -> tuple[np.ndarray, Counters]:
    """(the final image, counters) of a decoded program on a DRAM image (checked by check_fits)."""
    p = cfg.pattern
    a_name, b_name, o_name = cfg.operand_names
    nb, nr, nc, nk = d.counts
    (sa, sb, so) = regions(d, cfg)
    A, B = _tiles(dram, sa, cfg, a_name), _tiles(dram, sb, cfg, b_name)
    out = dram.copy()
    width = 4 if d.epilogue == "int32" else 1
    lanes = cfg.tile_lanes(o_name)
    O = out[so[0]:so[1]].reshape(-1, lanes * width)
    stored = cfg.storage_dims(o_name)
    to_stored = [1 + p.output.dims.index(x) for x in stored]
    bat, row, col, red = d.index.T
    ia, ib, io = (bat * nr + row) * nk + red, (bat * nc + col) * nk + red, (bat * nr + row) * nc + col
    per = cfg.tile_lanes(a_name) + cfg.tile_lanes(b_name) + 2 * lanes
    step = max(1, chunk_bytes // (8 * per))
    carry = np.zeros(lanes, np.int64)  # the accumulator between batches
    for lo in range(0, len(d.flags), step):
        hi = min(len(d.flags), lo + step)
        prod = p.contract(A[ia[lo:hi]].astype(np.int64), B[ib[lo:hi]].astype(np.int64), "z", "z", "z")
        prod = prod.transpose(0, *to_stored).reshape(hi - lo, lanes)
        total = np.concatenate([np.zeros((1, lanes), np.int64), np.cumsum(prod, 0)])
        # The accumulator after record i: the products since the last record that did not
        # ACCUMULATE, or since this batch began plus the carry.
        starts = np.where((d.flags[lo:hi] & 1) == 0, np.arange(hi - lo), -1)
        start = np.maximum.accumulate(starts)
        keep = np.flatnonzero(d.flags[lo:hi] & 2)
        want = np.r_[keep, hi - lo - 1]
        s = start[want]
        acc = total[want + 1] - total[np.maximum(s, 0)] + np.where(s < 0, 1, 0)[:, None] * carry[None]
        acc = acc.astype(np.int32).astype(np.int64)  # two's complement wrap at 32 bits
        carry = acc[-1]
        if len(keep):
            # Where two WRITEBACKs in one batch hit one tile, the later one is what remains.
            tiles = io[lo:hi][keep]
            _, last = np.unique(tiles[::-1], return_index=True)
            last = len(tiles) - 1 - last
            O[tiles[last]] = _epilogue(acc[:-1][last], d.epilogue).reshape(len(last), -1)
    mmas, wbs = len(d.flags), int(np.count_nonzero(d.flags & 2))
    counters = Counters(len(d), mmas, wbs, mmas * p.macs,
                        mmas * (cfg.tile_lanes(a_name) + cfg.tile_lanes(b_name)), wbs * lanes * width)
    return out, counters


def run_program(data: bytes, dram: np.ndarray, cfg: TemplateConfig) -> tuple[np.ndarray, Counters]:
    """program.bin on an image: decoded, checked and run; ProgramError for a refused program."""
    try:
        d = decode(data, cfg)
        check_fits(d, cfg, len(dram))
    except ValueError as exc:
        raise ProgramError(f"the {cfg.tag()} model refuses program.bin: {exc}") from None
    return run(d, dram, cfg)
