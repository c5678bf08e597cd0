"""The functional model's own reading of a Gemmini program.bin (docs/gemmini.md sections 2-3).

This module restates the register layouts from the specification, bit range
by bit range, and shares no table with commands.py, which writes programs:
if either side misreads the specification, programs stop verifying instead
of agreeing with themselves. It returns the same records as commands.py
(they are plain data) so the two can be compared record by record.

A program is a sequence of 24-byte entries, each three little-endian 64-bit
words: funct7, rs1, rs2. Bits that the subset keeps at zero (pooling,
normalisation, pixel repeats, reserved fields) are refused here, because the
records have no place for them and dropping them silently would change the
program's meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedcsp.targets.gemmini.commands import (
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
)

ENTRY_BYTES = 24
NO_OPERAND = 0xFFFF_FFFF  # the all-ones local address


def bits(word: int, hi: int, lo: int) -> int:
    """word[hi:lo], both ends included, as the specification writes ranges."""
    return (word >> lo) & ((1 << (hi - lo + 1)) - 1)


@dataclass(frozen=True)
class Local:
    """One 32-bit local address taken apart (docs/gemmini.md section 2.2)."""

    raw: int
    garbage: bool       # all 32 bits set: no operand
    acc: bool           # bit 31: accumulator, else scratchpad
    accumulate: bool    # bit 30: add into the accumulator instead of overwriting
    read_full: bool     # bit 29: mvout the raw accumulator value
    norm: int           # bits 28:26: normalisation command, outside the subset
    row: int            # bits 25:0

    @property
    def memory(self) -> str:
        return "accumulator" if self.acc else "scratchpad"


def read_local(addr: int) -> Local:
    addr &= 0xFFFF_FFFF
    return Local(raw=addr, garbage=addr == NO_OPERAND, acc=bool(bits(addr, 31, 31)),
                 accumulate=bool(bits(addr, 30, 30)), read_full=bool(bits(addr, 29, 29)),
                 norm=bits(addr, 28, 26), row=bits(addr, 25, 0))


def _zero(word: int, hi: int, lo: int, what: str) -> None:
    if bits(word, hi, lo):
        raise ValueError(f"{what} [{hi}:{lo}] = {bits(word, hi, lo):#x}: must be 0 in embedcsp's "
                         "Gemmini subset")


def _matrix(word: int) -> tuple[int, int, int]:
    """A descriptor register: (local address [31:0], rows [63:48], cols [47:32])."""
    return bits(word, 31, 0), bits(word, 63, 48), bits(word, 47, 32)


def _config(rs1: int, rs2: int) -> Command:
    sub = bits(rs1, 1, 0)
    if sub == 0:  # config_ex
        _zero(rs1, 6, 5, "config_ex rs1")
        _zero(rs1, 15, 10, "config_ex rs1")
        _zero(rs2, 47, 32, "config_ex rs2 (relu6_shift, retired)")
        return ConfigEx(dataflow=bits(rs1, 2, 2), activation=bits(rs1, 4, 3),
                        set_only_strides=bool(bits(rs1, 7, 7)), a_transpose=bool(bits(rs1, 8, 8)),
                        b_transpose=bool(bits(rs1, 9, 9)), a_stride=bits(rs1, 31, 16),
                        acc_scale_bits=bits(rs1, 63, 32), sys_shift=bits(rs2, 31, 0),
                        c_stride=bits(rs2, 63, 48))
    if sub == 1:  # config_ld (config_mvin)
        _zero(rs1, 7, 5, "config_ld rs1")
        repeats = bits(rs1, 15, 8)
        if repeats > 1:  # 0 reads as 1 repeat
            raise ValueError(f"config_ld pixel repeats [15:8] = {repeats}: the first-layer packing "
                             "is outside embedcsp's Gemmini subset")
        return ConfigLd(slot=bits(rs1, 4, 3), stride=rs2, block_stride=bits(rs1, 31, 16),
                        scale_bits=bits(rs1, 63, 32), shrink=bool(bits(rs1, 2, 2)))
    if sub == 2:  # config_st (config_mvout)
        _zero(rs1, 63, 4, "config_st rs1 (pooling)")
        return ConfigSt(stride=bits(rs2, 31, 0), activation=bits(rs1, 3, 2),
                        scale_bits=bits(rs2, 63, 32))
    raise ValueError("config_norm (CONFIG with rs1[1:0] = 3) is outside embedcsp's Gemmini subset")


def decode_command(funct: int, rs1: int, rs2: int) -> Command:
    """One (funct7, rs1, rs2) triple; ValueError for a command outside the subset."""
    if not 0 <= funct <= 127:
        raise ValueError(f"funct7 word {funct:#x} does not fit 7 bits")
    if funct == 0:
        return _config(rs1, rs2)
    if funct in (2, 1, 14):  # mvin, mvin2, mvin3: load slots 0, 1, 2
        addr, rows, cols = _matrix(rs2)
        return Mvin(dram_addr=rs1, addr=addr, rows=rows, cols=cols, slot={2: 0, 1: 1, 14: 2}[funct])
    if funct == 3:
        addr, rows, cols = _matrix(rs2)
        return Mvout(dram_addr=rs1, addr=addr, rows=rows, cols=cols)
    if funct == 6:
        (bd, bd_rows, bd_cols), (c, c_rows, c_cols) = _matrix(rs1), _matrix(rs2)
        return Preload(bd_addr=bd, bd_rows=bd_rows, bd_cols=bd_cols, c_addr=c, c_rows=c_rows,
                       c_cols=c_cols)
    if funct in (4, 5):
        (a, a_rows, a_cols), (x, x_rows, x_cols) = _matrix(rs1), _matrix(rs2)
        kind = ComputePreloaded if funct == 4 else ComputeAccumulated
        return kind(a_addr=a, a_rows=a_rows, a_cols=a_cols, x_addr=x, x_rows=x_rows, x_cols=x_cols)
    if funct == 7:
        _zero(rs1, 63, 1, "flush rs1")
        _zero(rs2, 63, 0, "flush rs2")
        return Flush(skip=bool(bits(rs1, 0, 0)))
    raise ValueError(f"funct7 {funct} is not a command of embedcsp's Gemmini subset "
                     "(config 0, mvin2 1, mvin 2, mvout 3, compute 4/5, preload 6, flush 7, mvin3 14)")


def decode_program(raw: bytes) -> list[Command]:
    """A whole program.bin; ValueError for a length that is not whole entries, or any bad entry."""
    if len(raw) % ENTRY_BYTES:
        raise ValueError(f"program is {len(raw)} bytes, not a whole number of "
                         f"{ENTRY_BYTES}-byte commands")
    out = []
    for pc in range(len(raw) // ENTRY_BYTES):
        base = pc * ENTRY_BYTES
        funct, rs1, rs2 = (int.from_bytes(raw[base + 8 * k: base + 8 * k + 8], "little")
                           for k in range(3))
        try:
            out.append(decode_command(funct, rs1, rs2))
        except ValueError as exc:
            raise ValueError(f"command {pc}: {exc}") from None
    return out


# ---------------------------------------------------------------- whole programs as arrays

# funct7 of the subset, as the specification numbers them (section 2.1), and what each is.
SUBSET_FUNCTS = {0: "config", 1: "mvin2", 2: "mvin", 3: "mvout", 4: "compute_preloaded",
                 5: "compute_accumulated", 6: "preload", 7: "flush", 14: "mvin3"}


@dataclass(frozen=True, eq=False)
class Entries:
    """A program.bin read as three arrays (one entry per command), for programs of millions of
    commands: the operand words stay packed and `field` takes bit ranges out of many at once.
    CONFIG and FLUSH entries, which carry more than descriptors, are decoded to records."""

    funct: np.ndarray   # uint8 per command
    rs1: np.ndarray     # uint64 per command
    rs2: np.ndarray     # uint64 per command
    records: dict[int, Command]  # command index -> record, for every CONFIG and FLUSH entry
    start: int = 0      # program index of the first entry (a piece of a longer program.bin)

    def __len__(self) -> int:
        return len(self.funct)

    def command(self, pc: int) -> Command:
        """The record of one command (the per-command model's input)."""
        return decode_command(int(self.funct[pc]), int(self.rs1[pc]), int(self.rs2[pc]))


def field(words: np.ndarray, hi: int, lo: int) -> np.ndarray:
    """words[hi:lo] for a whole array of 64-bit words, as int64."""
    words = np.asarray(words, np.uint64)
    mask = np.uint64((1 << (hi - lo + 1)) - 1)
    return ((words >> np.uint64(lo)) & mask).astype(np.int64)


def matrix_fields(words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Descriptor registers: (local address [31:0], rows [63:48], cols [47:32]) as int64 arrays."""
    return field(words, 31, 0), field(words, 63, 48), field(words, 47, 32)


def read_entries(raw: bytes | np.ndarray, start: int = 0) -> Entries:
    """A whole program.bin as arrays, or the piece of one whose first entry is command `start`;
    ValueError naming the first entry outside the subset."""
    buf = np.frombuffer(raw, np.uint8) if not isinstance(raw, np.ndarray) else raw.view(np.uint8)
    if buf.size % ENTRY_BYTES:
        raise ValueError(f"program is {buf.size} bytes, not a whole number of "
                         f"{ENTRY_BYTES}-byte commands")
    words = buf.view("<u8").reshape(-1, 3)
    funct_word = words[:, 0]
    known = np.zeros(128, bool)
    known[list(SUBSET_FUNCTS)] = True
    ok = (funct_word < 128) & known[np.minimum(funct_word, 127).astype(np.int64)]
    if not ok.all():
        pc = int(np.flatnonzero(~ok)[0])
        try:
            decode_command(int(words[pc, 0]), int(words[pc, 1]), int(words[pc, 2]))
        except ValueError as exc:
            raise ValueError(f"command {start + pc}: {exc}") from None
    funct = funct_word.astype(np.uint8)
    records: dict[int, Command] = {}
    for pc in np.flatnonzero((funct == 0) | (funct == 7)).tolist():
        try:
            records[pc] = decode_command(int(funct[pc]), int(words[pc, 1]), int(words[pc, 2]))
        except ValueError as exc:
            raise ValueError(f"command {start + pc}: {exc}") from None
    return Entries(funct, words[:, 1], words[:, 2], records, start)
