"""Gemmini commands as records, and their encoding into program.bin (docs/gemmini.md sections 2-3).

embedcsp uses eleven kinds of Gemmini command (docs/gemmini.md section 2). A
command is one RoCC instruction with two 64-bit operands, so program.bin
stores each as three little-endian u64 words: funct7, rs1, rs2. Record fields
keep the units of the operand registers: rows and columns, byte addresses
and byte strides, 32-bit local addresses with their flag bits, and float32
scales as their bit patterns (so a scale survives a round trip exactly).

This module is the writing side. The functional model reads program.bin with
its own decoder (decode.py), which restates the layouts without this file's
tables, so a misread field makes programs fail verification instead of
agreeing with themselves.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedcsp.targets.gemmini.config import GemminiConfig

# funct7 of each command (docs/gemmini.md section 2.1).
FUNCT_CONFIG = 0
FUNCT_MVIN2 = 1
FUNCT_MVIN = 2
FUNCT_MVOUT = 3
FUNCT_COMPUTE_PRELOADED = 4
FUNCT_COMPUTE_ACCUMULATED = 5
FUNCT_PRELOAD = 6
FUNCT_FLUSH = 7
FUNCT_MVIN3 = 14
MVIN_FUNCT = {0: FUNCT_MVIN, 1: FUNCT_MVIN2, 2: FUNCT_MVIN3}  # load-config slot -> funct7

# CONFIG's sub-command in rs1[1:0].
CONFIG_EX, CONFIG_LD, CONFIG_ST = 0, 1, 2

OS, WS = 0, 1  # dataflow bit of config_ex
ACT_NONE, ACT_RELU = 0, 1  # the activations in the subset

GARBAGE = 0xFFFFFFFF  # "no operand" (docs/gemmini.md section 2.2)
ACC_BIT = 1 << 31
ACCUMULATE_BIT = 1 << 30
READ_FULL_BIT = 1 << 29
NORM_MASK = 0b111 << 26
ROW_MASK = (1 << 26) - 1

F32_ONE = 0x3F800000  # float32 1.0, the identity scale

# Scales at or beyond 2^32 in magnitude could push an int32 times the scale past
# the 64-bit integer the model rounds through (docs/gemmini.md section 4).
MAX_SCALE = 2.0**32

COMMAND_BYTES = 24


# ---------------------------------------------------------------- scalars

def f32_bits(value: float) -> int:
    """The float32 bit pattern of `value`; ValueError unless it is an exact, finite float32."""
    if not math.isfinite(value):
        raise ValueError(f"scale {value!r} is not finite")
    try:
        raw = struct.pack("<f", value)
    except OverflowError:
        raise ValueError(f"scale {value!r} is outside float32's range") from None
    if struct.unpack("<f", raw)[0] != value:
        raise ValueError(f"scale {value!r} is not exactly a float32 value")
    return int.from_bytes(raw, "little")


def f32_value(bits: int) -> float:
    """The float32 that a 32-bit pattern holds."""
    return struct.unpack("<f", (bits & 0xFFFFFFFF).to_bytes(4, "little"))[0]


def local_addr(row: int, *, acc: bool = False, accumulate: bool = False,
               read_full: bool = False) -> int:
    """A 32-bit local address (docs/gemmini.md section 2.2): scratchpad row `row`, or
    accumulator row `row` with the accumulate (writes) or read-full (mvout) flag."""
    if not 0 <= row <= ROW_MASK:
        raise ValueError(f"local row {row} does not fit the 26-bit row field")
    if (accumulate or read_full) and not acc:
        raise ValueError("the accumulate and read-full flags exist only for accumulator addresses")
    return row | (ACC_BIT if acc else 0) | (ACCUMULATE_BIT if accumulate else 0) | (
        READ_FULL_BIT if read_full else 0)


# ---------------------------------------------------------------- commands

@dataclass(frozen=True)
class ConfigEx:
    """config_ex: the execute unit's dataflow, activation, transposes, strides and shift."""

    dataflow: int = WS              # rs1[2]: OS (0) or WS (1)
    activation: int = ACT_NONE      # rs1[4:3]: applied to results written to the scratchpad
    set_only_strides: bool = False  # rs1[7]: update only a_stride and c_stride
    a_transpose: bool = False       # rs1[8]
    b_transpose: bool = False       # rs1[9]
    a_stride: int = 1               # rs1[31:16], scratchpad rows between rows of A
    acc_scale_bits: int = F32_ONE   # rs1[63:32], for accumulator operands; unused in the subset
    sys_shift: int = 0              # rs2[31:0], rounding shift of OS results (< 32)
    c_stride: int = 1               # rs2[63:48], local rows between rows of C


@dataclass(frozen=True)
class ConfigLd:
    """config_ld: one of the three load slots (mvin = 0, mvin2 = 1, mvin3 = 2)."""

    slot: int                     # rs1[4:3]
    stride: int                   # rs2, DRAM bytes between the rows of an mvin
    block_stride: int             # rs1[31:16], local rows between DIM-column blocks
    scale_bits: int = F32_ONE     # rs1[63:32], mvin scale of elem data
    shrink: bool = False          # rs1[2]: accumulator mvins read elem_t instead of acc_t


@dataclass(frozen=True)
class ConfigSt:
    """config_st without pooling: mvout stride, read-out activation and scale."""

    stride: int                   # rs2[31:0], DRAM bytes between the rows of an mvout
    activation: int = ACT_NONE    # rs1[3:2], after scaling accumulator read-outs
    scale_bits: int = F32_ONE     # rs2[63:32], accumulator read-out scale


@dataclass(frozen=True)
class Mvin:
    """mvin (slot 0), mvin2 (slot 1), mvin3 (slot 2): DRAM rows into local memory."""

    dram_addr: int                # rs1, byte address of the first element (0: write zeros)
    addr: int                     # rs2[31:0], local address of the destination
    rows: int                     # rs2[63:48]
    cols: int                     # rs2[47:32]
    slot: int = 0                 # which load config applies; selects funct7


@dataclass(frozen=True)
class Mvout:
    """mvout: local rows to DRAM (int8 through the read-out scale, or raw int32)."""

    dram_addr: int                # rs1
    addr: int                     # rs2[31:0], local address of the source
    rows: int                     # rs2[63:48]
    cols: int                     # rs2[47:32]


@dataclass(frozen=True)
class Preload:
    """preload: names the matrix the next compute installs (B in WS, D in OS) and its C."""

    bd_addr: int                  # rs1[31:0]; GARBAGE: zeros
    bd_rows: int                  # rs1[63:48]
    bd_cols: int                  # rs1[47:32]
    c_addr: int                   # rs2[31:0]; GARBAGE: discard the result
    c_rows: int                   # rs2[63:48]
    c_cols: int                   # rs2[47:32]


@dataclass(frozen=True)
class ComputePreloaded:
    """compute_preloaded: install the preloaded matrix, then stream A (x = B in OS, D in WS)."""

    a_addr: int                   # rs1[31:0]
    a_rows: int                   # rs1[63:48]
    a_cols: int                   # rs1[47:32]
    x_addr: int                   # rs2[31:0]; GARBAGE: zeros
    x_rows: int                   # rs2[63:48]
    x_cols: int                   # rs2[47:32]


@dataclass(frozen=True)
class ComputeAccumulated:
    """compute_accumulated: stream A against the array's current state (same fields)."""

    a_addr: int
    a_rows: int
    a_cols: int
    x_addr: int
    x_rows: int
    x_cols: int


@dataclass(frozen=True)
class Flush:
    """flush: the TLB command; a no-op for the functional model."""

    skip: bool = False            # rs1[0]: drop the faulting request instead of retrying


Command = (ConfigEx | ConfigLd | ConfigSt | Mvin | Mvout | Preload | ComputePreloaded
           | ComputeAccumulated | Flush)

KINDS = ("config_ex", "config_ld", "config_st", "mvin", "mvin2", "mvin3", "mvout", "preload",
         "compute_preloaded", "compute_accumulated", "flush")


def kind_of(cmd: Command) -> str:
    """The command's name as docs/gemmini.md uses it (mvin, mvin2 and mvin3 apart)."""
    if isinstance(cmd, Mvin):
        return ("mvin", "mvin2", "mvin3")[cmd.slot] if cmd.slot in (0, 1, 2) else "mvin"
    return {ConfigEx: "config_ex", ConfigLd: "config_ld", ConfigSt: "config_st",
            Mvout: "mvout", Preload: "preload", ComputePreloaded: "compute_preloaded",
            ComputeAccumulated: "compute_accumulated", Flush: "flush"}[type(cmd)]


# ---------------------------------------------------------------- checks

def _name(cmd: Command, field: str) -> str:
    return f"{type(cmd).__name__}.{field}"


def _uint(cmd: Command, field: str, value: Any, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{_name(cmd, field)}={value!r} is not a whole number")
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{_name(cmd, field)}={value} does not fit {bits} bits")
    return value


def _between(cmd: Command, field: str, value: Any, lo: int, hi: int, why: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{_name(cmd, field)}={value!r} is not a whole number")
    if not lo <= value <= hi:
        raise ValueError(f"{_name(cmd, field)}={value} is outside {lo}..{hi} ({why})")
    return value


def _flag(cmd: Command, field: str, value: Any) -> int:
    if not isinstance(value, bool) and value not in (0, 1):
        raise ValueError(f"{_name(cmd, field)}={value!r} is not a flag (True/False)")
    return int(value)


def _scale(cmd: Command, field: str, bits: Any) -> int:
    bits = _uint(cmd, field, bits, 32)
    value = f32_value(bits)
    if not math.isfinite(value):
        raise ValueError(f"{_name(cmd, field)}=0x{bits:08X} is not a finite float32 (NaN/Inf "
                         "scales are outside the specification)")
    if abs(value) >= MAX_SCALE:
        raise ValueError(f"{_name(cmd, field)}={value!r}: scales must stay below 2^32 in magnitude")
    return bits


def _local(cmd: Command, field: str, addr: Any, cfg: GemminiConfig, role: str) -> int:
    """Check a local address for its role: 'mvin', 'mvout', 'operand' (A, B, D) or 'c'."""
    addr = _uint(cmd, field, addr, 32)
    if addr == GARBAGE:
        if role in ("mvin", "mvout"):
            raise ValueError(f"{_name(cmd, field)} is GARBAGE, which is no mvin/mvout address")
        return addr
    where = f"{_name(cmd, field)}=0x{addr:08X}"
    acc = bool(addr & ACC_BIT)
    if addr & NORM_MASK:
        raise ValueError(f"{where} sets bits 28:26 (normalisation), which the subset does not use")
    if addr & READ_FULL_BIT and not (role == "mvout" and acc):
        raise ValueError(f"{where} sets the read-full bit, which only an accumulator mvout reads")
    if addr & ACCUMULATE_BIT and not (role in ("mvin", "c") and acc):
        raise ValueError(f"{where} sets the accumulate bit, which only accumulator writes read")
    if role == "operand" and acc:
        raise ValueError(f"{where} is an accumulator address; A, B and D come from the scratchpad")
    row, limit = addr & ROW_MASK, (cfg.acc_rows if acc else cfg.sp_rows)
    if row >= limit:
        memory = "accumulator" if acc else "scratchpad"
        raise ValueError(f"{where}: row {row} is beyond the {memory}'s {limit} rows")
    return addr


def _descriptor(addr: int, rows: int, cols: int) -> int:
    return rows << 48 | cols << 32 | addr


def _dim_sized(cmd: Command, field: str, value: Any, cfg: GemminiConfig) -> int:
    return _between(cmd, field, value, 1, cfg.DIM, f"1..DIM, a {cfg.rows_bits}-bit RTL field")


# ---------------------------------------------------------------- encoding

def encode(cmd: Command, cfg: GemminiConfig) -> tuple[int, int, int]:
    """(funct7, rs1, rs2) of one command; ValueError names the field that does not fit."""
    if isinstance(cmd, ConfigEx):
        dataflow = _between(cmd, "dataflow", cmd.dataflow, OS, WS, "0 = OS, 1 = WS")
        act = _between(cmd, "activation", cmd.activation, ACT_NONE, ACT_RELU, "0 none, 1 ReLU")
        a_t, b_t = _flag(cmd, "a_transpose", cmd.a_transpose), _flag(cmd, "b_transpose", cmd.b_transpose)
        if dataflow == OS and b_t and not a_t:
            raise ValueError("ConfigEx.b_transpose: OS allows transposing A, or A and B, not B alone")
        if dataflow == WS and a_t and b_t:
            raise ValueError("ConfigEx.a_transpose/b_transpose: WS allows one transpose, not both")
        shift = _between(cmd, "sys_shift", cmd.sys_shift, 0, 31, "the rounding shift is < 32")
        rs1 = (CONFIG_EX | dataflow << 2 | act << 3
               | _flag(cmd, "set_only_strides", cmd.set_only_strides) << 7
               | a_t << 8 | b_t << 9 | _uint(cmd, "a_stride", cmd.a_stride, 16) << 16
               | _scale(cmd, "acc_scale_bits", cmd.acc_scale_bits) << 32)
        rs2 = shift | _uint(cmd, "c_stride", cmd.c_stride, 16) << 48
        return FUNCT_CONFIG, rs1, rs2
    if isinstance(cmd, ConfigLd):
        slot = _between(cmd, "slot", cmd.slot, 0, 2, "three load slots")
        rs1 = (CONFIG_LD | _flag(cmd, "shrink", cmd.shrink) << 2 | slot << 3
               | 1 << 8  # one pixel repeat: the first-layer packing is not in the subset
               | _uint(cmd, "block_stride", cmd.block_stride, 16) << 16
               | _scale(cmd, "scale_bits", cmd.scale_bits) << 32)
        return FUNCT_CONFIG, rs1, _uint(cmd, "stride", cmd.stride, 64)
    if isinstance(cmd, ConfigSt):
        act = _between(cmd, "activation", cmd.activation, ACT_NONE, ACT_RELU, "0 none, 1 ReLU")
        rs1 = CONFIG_ST | act << 2  # pooling fields stay 0: pooling is off
        rs2 = _uint(cmd, "stride", cmd.stride, 32) | _scale(cmd, "scale_bits", cmd.scale_bits) << 32
        return FUNCT_CONFIG, rs1, rs2
    if isinstance(cmd, Mvin):
        slot = _between(cmd, "slot", cmd.slot, 0, 2, "mvin, mvin2, mvin3")
        addr = _local(cmd, "addr", cmd.addr, cfg, "mvin")
        rows = _dim_sized(cmd, "rows", cmd.rows, cfg)
        cols = _between(cmd, "cols", cmd.cols, 1, cfg.max_cols_elem,
                        f"one {cfg.MAX_BYTES}-byte request of {cfg.elem_t}")
        rs1 = _uint(cmd, "dram_addr", cmd.dram_addr, 64)
        return MVIN_FUNCT[slot], rs1, _descriptor(addr, rows, cols)
    if isinstance(cmd, Mvout):
        addr = _local(cmd, "addr", cmd.addr, cfg, "mvout")
        rows = _dim_sized(cmd, "rows", cmd.rows, cfg)
        if addr & ACC_BIT and addr & READ_FULL_BIT:
            cols = _between(cmd, "cols", cmd.cols, 1, cfg.max_cols_full_mvout,
                            f"a full-width mvout is one block within one {cfg.MAX_BYTES}-byte request")
        else:
            cols = _between(cmd, "cols", cmd.cols, 1, cfg.max_cols_elem,
                            f"one {cfg.MAX_BYTES}-byte request of {cfg.elem_t}")
        rs1 = _uint(cmd, "dram_addr", cmd.dram_addr, 64)
        return FUNCT_MVOUT, rs1, _descriptor(addr, rows, cols)
    if isinstance(cmd, Preload):
        bd = _descriptor(_local(cmd, "bd_addr", cmd.bd_addr, cfg, "operand"),
                         _dim_sized(cmd, "bd_rows", cmd.bd_rows, cfg),
                         _dim_sized(cmd, "bd_cols", cmd.bd_cols, cfg))
        c = _descriptor(_local(cmd, "c_addr", cmd.c_addr, cfg, "c"),
                        _dim_sized(cmd, "c_rows", cmd.c_rows, cfg),
                        _dim_sized(cmd, "c_cols", cmd.c_cols, cfg))
        return FUNCT_PRELOAD, bd, c
    if isinstance(cmd, (ComputePreloaded, ComputeAccumulated)):
        a = _descriptor(_local(cmd, "a_addr", cmd.a_addr, cfg, "operand"),
                        _dim_sized(cmd, "a_rows", cmd.a_rows, cfg),
                        _dim_sized(cmd, "a_cols", cmd.a_cols, cfg))
        x = _descriptor(_local(cmd, "x_addr", cmd.x_addr, cfg, "operand"),
                        _dim_sized(cmd, "x_rows", cmd.x_rows, cfg),
                        _dim_sized(cmd, "x_cols", cmd.x_cols, cfg))
        funct = FUNCT_COMPUTE_PRELOADED if isinstance(cmd, ComputePreloaded) else FUNCT_COMPUTE_ACCUMULATED
        return funct, a, x
    if isinstance(cmd, Flush):
        return FUNCT_FLUSH, _flag(cmd, "skip", cmd.skip), 0
    raise TypeError(f"{type(cmd).__name__} is not a Gemmini command")


def check_program(cmds: Iterable[Command], cfg: GemminiConfig) -> None:
    """The limits that need more than one command: every config issued before its first
    use, `block_stride >= rows`, and acc-width mvins within one request (docs/gemmini.md
    section 3). ValueError names the command and the field."""
    slots: dict[int, ConfigLd] = {}
    ex_set = st_set = False
    for pc, cmd in enumerate(cmds):
        where = f"command {pc} ({kind_of(cmd)})"
        if isinstance(cmd, ConfigEx):
            ex_set = ex_set or not cmd.set_only_strides
        elif isinstance(cmd, ConfigLd):
            slots[cmd.slot] = cmd
        elif isinstance(cmd, ConfigSt):
            st_set = True
        elif isinstance(cmd, Mvin):
            ld = slots.get(cmd.slot)
            if ld is None:
                raise ValueError(f"{where}: load slot {cmd.slot} is used before any config_ld set it")
            if ld.block_stride < cmd.rows:
                raise ValueError(f"{where}: Mvin.rows={cmd.rows} exceeds the slot's block_stride="
                                 f"{ld.block_stride} (the RTL needs block_stride >= rows)")
            acc = bool(cmd.addr & ACC_BIT)
            if acc and not ld.shrink and cmd.cols > cfg.max_cols_acc:
                raise ValueError(f"{where}: Mvin.cols={cmd.cols} of {cfg.acc_t} exceed one "
                                 f"{cfg.MAX_BYTES}-byte request ({cfg.max_cols_acc} columns)")
            blocks = -(-cmd.cols // cfg.DIM)
            last = (cmd.addr & ROW_MASK) + (blocks - 1) * ld.block_stride + cmd.rows - 1
            limit = cfg.acc_rows if acc else cfg.sp_rows
            if last >= limit:
                raise ValueError(f"{where}: Mvin writes up to local row {last}, beyond the "
                                 f"{'accumulator' if acc else 'scratchpad'}'s {limit} rows")
        elif isinstance(cmd, Mvout) and not st_set:
            raise ValueError(f"{where}: mvout before any config_st")
        elif isinstance(cmd, (Preload, ComputePreloaded, ComputeAccumulated)) and not ex_set:
            raise ValueError(f"{where}: execute command before any config_ex set the dataflow")


def encode_program(cmds: Iterable[Command], cfg: GemminiConfig) -> bytes:
    """program.bin: 24 bytes a command, funct7, rs1, rs2 as little-endian u64 (section 7)."""
    cmds = list(cmds)
    out = [struct.pack("<3Q", *encode(cmd, cfg)) for cmd in cmds]
    check_program(cmds, cfg)
    return b"".join(out)


# ---------------------------------------------------------------- epilogues

def epilogue_readout(epilogue: Mapping[str, Any]) -> tuple[int, bool]:
    """How a manifest epilogue is read out (docs/gemmini.md section 7): the config_st
    scale bits and whether the mvout sets the read-full bit."""
    kind = epilogue.get("kind")
    if kind == "saturate":
        return F32_ONE, False
    if kind == "int32":
        return F32_ONE, True
    if kind == "requant":
        shift = epilogue.get("shift")
        if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= 31:
            raise ValueError(f"requant shift must be a whole number within 0..31, got {shift!r}")
        rounding = epilogue.get("rounding", "nearest_even")
        if rounding != "nearest_even":
            raise ValueError(f"Gemmini rounds its read-out half to even; requant rounding "
                             f"{rounding!r} is not available")
        return f32_bits(2.0 ** -shift), False
    if kind == "wrap":
        raise ValueError("Gemmini's int8 read-out always saturates; the 'wrap' epilogue "
                         "(low 8 bits) is not available")
    raise ValueError(f"unknown epilogue kind {kind!r}; expected saturate, requant or int32")


# ---------------------------------------------------------------- whole programs as arrays

def descriptor_words(addr: Any, rows: Any, cols: Any) -> np.ndarray:
    """Descriptor registers `rows << 48 | cols << 32 | addr` for arrays of commands (the same
    layout as `encode`'s, for programs of millions of commands); ValueError if a field does
    not fit its bits."""
    addr, rows, cols = (np.asarray(v, np.int64) for v in (addr, rows, cols))
    for name, v, bits in (("addr", addr, 32), ("rows", rows, 16), ("cols", cols, 16)):
        if v.size and (v.min() < 0 or v.max() >= 1 << bits):
            raise ValueError(f"descriptor {name} outside 0..{(1 << bits) - 1}")
    if rows.size and rows.max() >= 1 << 15:  # would reach int64's sign bit
        return (rows.astype(np.uint64) << np.uint64(48)) | (cols.astype(np.uint64) << np.uint64(32)) | (
            addr.astype(np.uint64))
    return ((rows << 48) | (cols << 32) | addr).view(np.uint64)


def entries_bytes(funct: np.ndarray, rs1: np.ndarray, rs2: np.ndarray) -> bytes:
    """program.bin of command arrays: per command funct7, rs1, rs2 as little-endian u64."""
    words = np.empty((len(funct), 3), "<u8")
    words[:, 0], words[:, 1], words[:, 2] = funct, rs1, rs2
    return words.tobytes()
