"""Bit-exact functional model of embedcsp's Gemmini subset (docs/gemmini.md sections 4-6).

The Spike model's semantics are the reference; where the RTL would compute
something else for the same program, the model refuses the program instead
of picking one of the two answers (docs/gemmini.md section 6 lists every
refusal and the difference behind it). Each command runs whole and in
program order, vectorised with numpy (no Python loop per element), in exact
int64 arithmetic wrapped to int32 where the hardware's sums are int32, and
in float32 where the hardware scales.

Inputs: the command records (or program.bin through decode.py, the model's
own reader), a DRAM image as a flat uint8 array, and `dram_base`, the byte
address of the image's first byte. Output: the final image and counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from embedcsp.errors import ProgramError
from embedcsp.targets.gemmini.commands import (
    KINDS,
    Command,
    ComputeAccumulated,
    ComputePreloaded,
    ConfigEx,
    ConfigLd,
    ConfigSt,
    Mvin,
    Mvout,
    Preload,
    kind_of,
)
from embedcsp.targets.gemmini.config import MAX_ARRAY_PRODUCTS, GemminiConfig
from embedcsp.targets.gemmini.decode import Local, decode_program, read_local

OS, WS = 0, 1
RELU = 1
MAX_SCALE = 2.0**32  # the model rounds through a 64-bit integer


@dataclass(frozen=True)
class Counters:
    """What one run did: commands per kind, DRAM bytes moved, multiply-accumulates."""

    commands: dict[str, int]
    load_bytes: int   # DRAM bytes read by mvins (an mvin from address 0 reads none)
    store_bytes: int  # DRAM bytes written by mvouts
    macs: int         # products a compute can make non-zero: A rows x reduction x output columns

    @property
    def gemm_uops(self) -> int:
        """Instruction instances executed (the core's name for them): computes."""
        return self.commands.get("compute_preloaded", 0) + self.commands.get("compute_accumulated", 0)

    def as_dict(self) -> dict:
        return {"commands": dict(self.commands), "load_bytes": self.load_bytes,
                "store_bytes": self.store_bytes, "macs": self.macs}


# ---------------------------------------------------------------- arithmetic (section 4 of the doc)

def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32's range (kept as int64)."""
    x = np.asarray(x, np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def scale_round_saturate(x: np.ndarray, scale: float, lo: int = -128, hi: int = 127) -> np.ndarray:
    """sat(rne(f32(f32(x) * scale))): mvin scaling and the accumulator read-out."""
    y = np.asarray(x).astype(np.float32) * np.float32(scale)  # one single-precision multiply
    return np.clip(np.rint(y), lo, hi).astype(np.int64)      # rint: half to even


def rounding_shift(x: np.ndarray, s: int) -> np.ndarray:
    """x / 2^s rounded half to even, for int32 values and 0 <= s < 32."""
    x = np.asarray(x, np.int64)
    if s == 0:
        return x
    q = x >> s
    half = (x >> (s - 1)) & 1
    sticky = (x & ((1 << (s - 1)) - 1)) != 0
    return q + (half & (sticky | (q & 1)))


def _f32(bits: int) -> float:
    return float(np.array([bits & 0xFFFFFFFF], np.uint32).view(np.float32)[0])


# ---------------------------------------------------------------- state

@dataclass
class _Ex:
    mode: int | None = None  # None until a full config_ex
    act: int = 0
    shift: int = 0
    a_transpose: bool = False
    b_transpose: bool = False
    a_stride: int = 1
    c_stride: int = 1


@dataclass
class _Ld:
    stride: int
    block_stride: int
    scale: float
    shrink: bool


@dataclass
class _St:
    stride: int
    act: int
    scale: float


@dataclass
class _Tally:
    commands: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    load_bytes: int = 0
    store_bytes: int = 0
    macs: int = 0


class _Machine:
    """Local memories, configuration, array state and DRAM of one run."""

    def __init__(self, cfg: GemminiConfig, dram: np.ndarray, dram_base: int):
        d = cfg.DIM
        self.cfg = cfg
        self.sp = np.zeros((cfg.sp_rows, d), np.int8)
        self.acc = np.zeros((cfg.acc_rows, d), np.int32)
        # Which elements a command wrote: the RTL's memories start undefined, so a read
        # of anything else would differ between model and RTL.
        self.sp_set = np.zeros((cfg.sp_rows, d), bool)
        # Per scratchpad row, how many leading columns are written (derived from sp_set, for
        # batch.py's checks; it can only lag behind sp_set, which makes those checks stricter).
        self.sp_lead = np.zeros(cfg.sp_rows, np.int64)
        self.acc_set = np.zeros((cfg.acc_rows, d), bool)
        self.pe = np.zeros((d, d), np.int64)
        self.pe_mode: int | None = None  # dataflow of what the array holds; None: nothing
        self.w_rows = self.w_cols = 0    # WS: extent of the installed weights
        self.chain_products = 0          # OS: products per output in the current chain
        self.chain_closed = False        # OS: the chain has written its C
        self.ex = _Ex()
        self.ld: list[_Ld | None] = [None, None, None]
        self.st: _St | None = None
        self.pending: tuple[int, Preload] | None = None
        self.dram, self.base = dram, dram_base
        # Main memory is not ordered between Gemmini's load and store queues without a
        # fence, and a program has none inside it: track what mvins read and mvouts wrote.
        self.dram_read = np.zeros(len(dram), bool)
        self.dram_written = np.zeros(len(dram), bool)
        self.tally = _Tally()

    def lead_rows(self, rows: np.ndarray, distinct: bool = False) -> None:
        """Bring sp_lead up to date for these scratchpad rows (`distinct`: no row twice)."""
        u = rows if distinct else np.unique(rows)
        s = self.sp_set[u]
        self.sp_lead[u] = np.where(s.all(1), self.cfg.DIM, s.argmin(1))

    # ---- shared checks
    def _dim(self, what: str, name: str, value: int) -> None:
        if not 1 <= value <= self.cfg.DIM:
            raise ProgramError(f"{what}: {name} = {value}, outside 1..DIM = {self.cfg.DIM} "
                               "(an RTL field limit)")

    def _flags_for(self, what: str, name: str, loc: Local, *, write_acc: bool = False,
                   mvout: bool = False) -> None:
        if loc.norm:
            raise ProgramError(f"{what}: {name} 0x{loc.raw:08X} sets bits 28:26; normalisation "
                               "commands are outside the subset")
        if loc.accumulate and not (loc.acc and write_acc):
            raise ProgramError(f"{what}: {name} 0x{loc.raw:08X} sets the accumulate bit where "
                               "nothing is written to the accumulator")
        if loc.read_full and not (loc.acc and mvout):
            raise ProgramError(f"{what}: {name} 0x{loc.raw:08X} sets the read-full bit outside an "
                               "accumulator mvout")

    def _operand(self, what: str, name: str, addr: int) -> Local:
        loc = read_local(addr)
        if loc.garbage:
            return loc
        self._flags_for(what, name, loc)
        if loc.acc:
            raise ProgramError(f"{what}: {name} is an accumulator address; the model reads A, B "
                               "and D only from the scratchpad")
        return loc

    def _rows_in(self, what: str, loc: Local, rows: np.ndarray) -> None:
        limit = self.cfg.acc_rows if loc.acc else self.cfg.sp_rows
        if rows.size and (rows.min() < 0 or rows.max() >= limit):
            raise ProgramError(f"{what}: touches {loc.memory} row {int(rows.max())}, beyond its "
                               f"{limit} rows")

    def _written(self, what: str, acc: bool, rows: np.ndarray, cols: np.ndarray) -> None:
        ok = (self.acc_set if acc else self.sp_set)[rows, cols]
        if not ok.all():
            first = tuple(np.argwhere(~ok)[0])
            r = int(np.broadcast_to(rows, ok.shape)[first])
            c = int(np.broadcast_to(cols, ok.shape)[first])
            raise ProgramError(f"{what}: reads {'accumulator' if acc else 'scratchpad'} row {r} "
                               f"column {c} before any command wrote it (undefined on the RTL)")

    def _dram(self, what: str, addr: int, rows: int, stride: int, row_bytes: int) -> np.ndarray:
        """Image indices [rows, row_bytes] of a strided DRAM access."""
        first = addr - self.base
        last = first + (rows - 1) * stride + row_bytes
        if first < 0 or last > len(self.dram):
            raise ProgramError(f"{what}: DRAM bytes [{addr:#x}, {self.base + last:#x}) are outside "
                               f"the image at [{self.base:#x}, {self.base + len(self.dram):#x})")
        return (first + np.arange(rows, dtype=np.int64)[:, None] * stride
                + np.arange(row_bytes, dtype=np.int64)[None, :])

    # ---- configuration
    def config_ex(self, what: str, cmd: ConfigEx) -> None:
        if self.pending is not None:
            raise ProgramError(f"{what}: config_ex between a preload (command {self.pending[0]}) "
                               "and its compute")
        if cmd.dataflow not in (OS, WS):
            raise ProgramError(f"{what}: dataflow {cmd.dataflow} is neither OS (0) nor WS (1)")
        if cmd.activation not in (0, RELU):
            raise ProgramError(f"{what}: activation {cmd.activation}; the subset has 0 (none) and "
                               "1 (ReLU)")
        if not 0 <= cmd.sys_shift < 32:
            raise ProgramError(f"{what}: sys_shift {cmd.sys_shift} must be below 32")
        a_t, b_t = bool(cmd.a_transpose), bool(cmd.b_transpose)
        # The model asserts this table even for a strides-only config_ex.
        if (cmd.dataflow == OS and b_t and not a_t) or (cmd.dataflow == WS and a_t and b_t):
            raise ProgramError(f"{what}: transposes A={a_t}, B={b_t} are not allowed in "
                               f"{'OS' if cmd.dataflow == OS else 'WS'}")
        for name, value in (("a_stride", cmd.a_stride), ("c_stride", cmd.c_stride)):
            if not 0 <= value < 1 << 16:
                raise ProgramError(f"{what}: {name} {value} does not fit 16 bits")
        ex = self.ex
        ex.a_stride, ex.c_stride = cmd.a_stride, cmd.c_stride
        if not cmd.set_only_strides:
            if self.pe_mode is not None and cmd.dataflow != self.pe_mode:
                self.pe_mode = None  # the array's contents mean nothing in the other dataflow
            ex.mode, ex.act, ex.shift = cmd.dataflow, cmd.activation, cmd.sys_shift
            ex.a_transpose, ex.b_transpose = a_t, b_t

    def _scale(self, what: str, bits: int) -> float:
        value = _f32(bits)
        if not np.isfinite(value) or abs(value) >= MAX_SCALE:
            raise ProgramError(f"{what}: scale 0x{bits & 0xFFFFFFFF:08X} ({value!r}) is not a finite "
                               "float32 below 2^32 in magnitude")
        return value

    def config_ld(self, what: str, cmd: ConfigLd) -> None:
        if cmd.slot not in (0, 1, 2):
            raise ProgramError(f"{what}: load slot {cmd.slot} does not exist (0, 1, 2)")
        if not 0 <= cmd.block_stride < 1 << 16 or not 0 <= cmd.stride < 1 << 64:
            raise ProgramError(f"{what}: block_stride or stride does not fit its field")
        self.ld[cmd.slot] = _Ld(cmd.stride, cmd.block_stride, self._scale(what, cmd.scale_bits),
                                bool(cmd.shrink))

    def config_st(self, what: str, cmd: ConfigSt) -> None:
        if cmd.activation not in (0, RELU):
            raise ProgramError(f"{what}: activation {cmd.activation}; the subset has 0 (none) and "
                               "1 (ReLU)")
        if not 0 <= cmd.stride < 1 << 32:
            raise ProgramError(f"{what}: stride {cmd.stride} does not fit 32 bits")
        self.st = _St(cmd.stride, cmd.activation, self._scale(what, cmd.scale_bits))

    # ---- data movement
    def mvin(self, what: str, cmd: Mvin) -> None:
        cfg, d = self.cfg, self.cfg.DIM
        loc = read_local(cmd.addr)
        if loc.garbage:
            raise ProgramError(f"{what}: GARBAGE is not an mvin destination")
        self._flags_for(what, "destination", loc, write_acc=True)
        ld = self.ld[cmd.slot] if cmd.slot in (0, 1, 2) else None
        if ld is None:
            raise ProgramError(f"{what}: load slot {cmd.slot} is used before any config_ld set it")
        self._dim(what, "rows", cmd.rows)
        esz = cfg.acc_bytes if loc.acc and not ld.shrink else cfg.elem_bytes
        if not 1 <= cmd.cols * esz <= cfg.MAX_BYTES:
            raise ProgramError(f"{what}: cols = {cmd.cols} of {esz}-byte elements; one mvin moves "
                               f"1 to {cfg.MAX_BYTES} bytes a row")
        if ld.block_stride < cmd.rows:
            raise ProgramError(f"{what}: the slot's block_stride {ld.block_stride} is below rows "
                               f"= {cmd.rows} (the RTL requires block_stride >= rows)")
        r = np.arange(cmd.rows)[:, None]
        c = np.arange(cmd.cols)[None, :]
        rows = np.broadcast_to(loc.row + r + (c // d) * ld.block_stride, (cmd.rows, cmd.cols))
        cols = np.broadcast_to(c % d, (cmd.rows, cmd.cols))
        self._rows_in(what, loc, rows)
        if cmd.dram_addr == 0:  # writes zeros without touching memory
            if loc.acc and loc.accumulate:
                return  # adds zero: the accumulator keeps what it holds
            values = np.zeros((cmd.rows, cmd.cols), np.int64)
        else:
            idx = self._dram(what, cmd.dram_addr, cmd.rows, ld.stride, cmd.cols * esz)
            if self.dram_written[idx].any():
                raise ProgramError(f"{what}: reads DRAM that an earlier mvout wrote; without a "
                                   "fence between them the RTL may read the old bytes")
            self.dram_read[idx] = True
            raw = np.ascontiguousarray(self.dram[idx])
            self.tally.load_bytes += raw.size
            if esz == cfg.acc_bytes:  # raw int32, never scaled
                values = raw.view("<i4").astype(np.int64).reshape(cmd.rows, cmd.cols)
            else:
                values = scale_round_saturate(raw.view(np.int8), ld.scale, cfg.elem_min, cfg.elem_max)
        if loc.acc:
            if loc.accumulate:
                self._written(what, True, rows, cols)
                values = wrap_int32(self.acc[rows, cols].astype(np.int64) + values)
            self.acc[rows, cols] = values
            self.acc_set[rows, cols] = True
        else:
            self.sp[rows, cols] = values
            self.sp_set[rows, cols] = True
            self.lead_rows(rows)

    def mvout(self, what: str, cmd: Mvout) -> None:
        cfg, d = self.cfg, self.cfg.DIM
        loc = read_local(cmd.addr)
        if loc.garbage:
            raise ProgramError(f"{what}: GARBAGE is not an mvout source (the RTL writes zeros, "
                               "the model aborts)")
        self._flags_for(what, "source", loc, mvout=True)
        st = self.st
        if st is None:
            raise ProgramError(f"{what}: mvout before any config_st")
        self._dim(what, "rows", cmd.rows)
        full = loc.acc and loc.read_full
        esz = cfg.acc_bytes if full else cfg.elem_bytes
        limit = cfg.max_cols_full_mvout if full else cfg.max_cols_elem
        if not 1 <= cmd.cols <= limit:
            raise ProgramError(f"{what}: cols = {cmd.cols}, outside 1..{limit} for "
                               f"{'a full-width' if full else 'an elem_t'} mvout")
        i = np.arange(cmd.rows)[:, None]
        j = np.arange(cmd.cols)[None, :]
        rows = np.broadcast_to(loc.row + (j // d) * d + i, (cmd.rows, cmd.cols))
        cols = np.broadcast_to(j % d, (cmd.rows, cmd.cols))
        self._rows_in(what, loc, rows)
        self._written(what, loc.acc, rows, cols)
        if not loc.acc:
            out = self.sp[rows, cols].view(np.uint8)
        elif full:
            out = self.acc[rows, cols].astype("<i4").view(np.uint8).reshape(cmd.rows, -1)
        else:
            if st.act == RELU and st.scale < 0:
                # Model: scale, saturate, then ReLU; RTL: ReLU first. They agree only for scales >= 0.
                raise ProgramError(f"{what}: ReLU with a negative read-out scale ({st.scale!r}) means "
                                   "different things on the model and the RTL")
            y = scale_round_saturate(self.acc[rows, cols], st.scale, cfg.elem_min, cfg.elem_max)
            if st.act == RELU:
                y = np.maximum(y, 0)
            out = y.astype(np.int8).view(np.uint8)
        row_bytes = cmd.cols * esz
        if cmd.rows > 1 and st.stride < row_bytes:
            raise ProgramError(f"{what}: DRAM rows of {row_bytes} bytes {st.stride} bytes apart "
                               "overlap each other")
        idx = self._dram(what, cmd.dram_addr, cmd.rows, st.stride, row_bytes)
        if self.dram_read[idx].any():
            raise ProgramError(f"{what}: overwrites DRAM that an earlier mvin reads; without a fence "
                               "the RTL may run the store first")
        self.dram[idx] = out
        self.dram_written[idx] = True
        self.tally.store_bytes += out.size

    # ---- execute
    def preload(self, what: str, pc: int, cmd: Preload) -> None:
        if self.ex.mode is None:
            raise ProgramError(f"{what}: preload before any config_ex set the dataflow")
        if self.pending is not None:
            raise ProgramError(f"{what}: follows the preload of command {self.pending[0]} with no "
                               "compute between them")
        self._operand(what, "B/D", cmd.bd_addr)
        c = read_local(cmd.c_addr)
        if not c.garbage:
            self._flags_for(what, "C", c, write_acc=True)
        for name in ("bd_rows", "bd_cols", "c_rows", "c_cols"):
            self._dim(what, name, getattr(cmd, name))
        self.pending = (pc, cmd)

    def _gather(self, what: str, loc: Local, row_step: int, rows: int, cols: int,
                transpose: bool) -> np.ndarray:
        """A DIM x DIM operand, zero beyond rows x cols: element (i, k) comes from scratchpad
        row base + row_step*i, column k, or (transposed) row base + row_step*k, column i."""
        d = self.cfg.DIM
        m = np.zeros((d, d), np.int64)
        if loc.garbage:
            return m
        n_rows, n_cols = (cols, rows) if transpose else (rows, cols)
        r = loc.row + row_step * np.arange(n_rows)[:, None]
        k = np.arange(n_cols)[None, :]
        r, k = np.broadcast_to(r, (n_rows, n_cols)), np.broadcast_to(k, (n_rows, n_cols))
        self._rows_in(what, loc, r)
        self._written(what, False, r, k)
        block = self.sp[r, k].astype(np.int64)
        if transpose:
            m[:rows, :cols] = block.T
        else:
            m[:rows, :cols] = block
        return m

    def compute(self, what: str, cmd: ComputePreloaded | ComputeAccumulated) -> None:
        ex = self.ex
        if ex.mode is None:
            raise ProgramError(f"{what}: compute before any config_ex set the dataflow")
        if self.pending is None:
            raise ProgramError(f"{what}: not immediately preceded by a preload (the RTL discards "
                               "an unpaired compute's result, the model writes it again)")
        _, pre = self.pending
        self.pending = None
        a = self._operand(what, "A", cmd.a_addr)
        x = self._operand(what, "B/D", cmd.x_addr)
        for name in ("a_rows", "a_cols", "x_rows", "x_cols"):
            self._dim(what, name, getattr(cmd, name))
        c = read_local(pre.c_addr)
        mode, flip = ex.mode, isinstance(cmd, ComputePreloaded)
        if not flip:
            if not read_local(pre.bd_addr).garbage:
                raise ProgramError(f"{what}: compute_accumulated ignores its preload's B/D; give "
                                   "the preload GARBAGE there")
            if self.pe_mode != mode:
                raise ProgramError(f"{what}: compute_accumulated with nothing installed in the "
                                   f"{'OS' if mode == OS else 'WS'} array (the RTL's array starts "
                                   "undefined)")
            if mode == OS and self.chain_closed:
                raise ProgramError(f"{what}: continues an OS chain that already wrote its C; only "
                                   "a chain's last pair may name a C")
        if a.garbage and (mode == OS or not c.garbage):
            raise ProgramError(f"{what}: A is GARBAGE (undefined data) but the result is kept")
        bd = read_local(pre.bd_addr)
        # The 20-bit limit depends only on the operand shapes: check it before reading data.
        if mode == WS:
            w_rows, w_cols = ((0, 0) if bd.garbage else (pre.bd_rows, pre.bd_cols)) if flip else (
                self.w_rows, self.w_cols)
            products = 0 if a.garbage else min(cmd.a_cols, w_rows)
            if products > MAX_ARRAY_PRODUCTS:
                raise ProgramError(f"{what}: {products} products per output in one WS compute; the "
                                   f"RTL's 20-bit partial sums hold at most {MAX_ARRAY_PRODUCTS}")
            self.tally.macs += cmd.a_rows * products * w_cols
        else:
            products = 0 if x.garbage else min(cmd.a_cols, cmd.x_rows)
            chain = (0 if flip else self.chain_products) + products
            if chain > MAX_ARRAY_PRODUCTS:
                raise ProgramError(f"{what}: the OS chain reaches {chain} products per output; the "
                                   f"RTL's 20-bit accumulators hold at most {MAX_ARRAY_PRODUCTS} "
                                   "(accumulate longer sums in the accumulator)")
            self.tally.macs += cmd.a_rows * products * cmd.x_cols
        if flip:
            if mode == WS:
                # b_transpose installs W[i, j] = SP[bd + j][i].
                self.pe = self._gather(what, bd, 1, pre.bd_rows, pre.bd_cols, ex.b_transpose)
                self.w_rows, self.w_cols = w_rows, w_cols
            else:
                self.pe = self._gather(what, bd, 1, pre.bd_rows, pre.bd_cols, False)
                self.chain_closed = False
            self.pe_mode = mode
        am = self._gather(what, a, ex.a_stride, cmd.a_rows, cmd.a_cols, ex.a_transpose)
        if mode == WS:
            dv = self._gather(what, x, 1, cmd.x_rows, cmd.x_cols, False)
            out = wrap_int32(dv + am @ self.pe)
        else:
            if not x.garbage:
                # The model reads rows x .. x + x_rows - 1 whether or not B is transposed.
                self._rows_in(what, x, x.row + np.arange(cmd.x_rows))
            bv = self._gather(what, x, 1, cmd.x_rows, cmd.x_cols, ex.b_transpose)
            self.chain_products = chain
            self.pe = wrap_int32(self.pe + am @ bv)
            out = self.pe
        if not c.garbage:
            self._write_c(what, pre, cmd, c, out)

    def _write_c(self, what: str, pre: Preload, cmd, c: Local, out: np.ndarray) -> None:
        ex = self.ex
        if ex.mode == OS:
            self.chain_closed = True
            if ex.c_stride != 1:
                raise ProgramError(f"{what}: OS with c_stride {ex.c_stride}; the RTL addresses OS "
                                   "results differently unless c_stride = 1")
            if c.acc and ex.shift:
                raise ProgramError(f"{what}: OS results into the accumulator with sys_shift "
                                   f"{ex.shift}; the RTL shifts them, the model does not")
        if pre.c_rows > cmd.a_rows:
            raise ProgramError(f"{what}: C has {pre.c_rows} rows but A only {cmd.a_rows}; the RTL "
                               "does not write C rows beyond those it streams")
        if ex.c_stride == 0 and pre.c_rows > 1:
            raise ProgramError(f"{what}: c_stride 0 writes {pre.c_rows} rows of C onto one row")
        rows = np.broadcast_to((c.row + ex.c_stride * np.arange(pre.c_rows))[:, None],
                               (pre.c_rows, pre.c_cols))
        cols = np.broadcast_to(np.arange(pre.c_cols)[None, :], (pre.c_rows, pre.c_cols))
        self._rows_in(what, c, rows)
        values = out[:pre.c_rows, :pre.c_cols]
        if c.acc:
            if c.accumulate:
                self._written(what, True, rows, cols)
                values = wrap_int32(self.acc[rows, cols].astype(np.int64) + values)
            self.acc[rows, cols] = values
            self.acc_set[rows, cols] = True
        else:
            shift = ex.shift if ex.mode == OS else 0
            y = np.clip(rounding_shift(values, shift), self.cfg.elem_min, self.cfg.elem_max)
            if ex.act == RELU:
                y = np.maximum(y, 0)
            self.sp[rows, cols] = y
            self.sp_set[rows, cols] = True
            self.lead_rows(rows)


# ---------------------------------------------------------------- entry points

def run(cmds: Sequence[Command], dram: np.ndarray, dram_base: int,
        cfg: GemminiConfig) -> tuple[np.ndarray, Counters]:
    """Execute commands on a copy of the DRAM image; return the final image and counters.

    ProgramError for anything the model refuses (docs/gemmini.md section 6)."""
    m = new_machine(cfg, dram, dram_base)
    for pc, cmd in enumerate(cmds):
        m.tally.commands[step(m, pc, cmd)] += 1
    return finish(m)


def new_machine(cfg: GemminiConfig, dram: np.ndarray, dram_base: int) -> _Machine:
    """A machine with zeroed memories on a copy of the DRAM image (checked)."""
    dram = np.asarray(dram)
    if dram.dtype != np.uint8 or dram.ndim != 1:
        raise ProgramError(f"the DRAM image must be a flat uint8 array, got {dram.dtype} of shape "
                           f"{dram.shape}")
    if isinstance(dram_base, bool) or not isinstance(dram_base, (int, np.integer)) or dram_base <= 0:
        raise ProgramError(f"dram_base must be a positive byte address (an mvin from 0 writes "
                           f"zeros), got {dram_base!r}")
    return _Machine(cfg, dram.copy(), int(dram_base))


def step(m: _Machine, pc: int, cmd: Command) -> str:
    """Execute one command (the per-command definition); its kind."""
    try:
        kind = kind_of(cmd)
    except KeyError:
        raise ProgramError(f"command {pc}: {type(cmd).__name__} is not a Gemmini command") from None
    what = f"command {pc} ({kind})"
    if isinstance(cmd, ConfigEx):
        m.config_ex(what, cmd)
    elif isinstance(cmd, ConfigLd):
        m.config_ld(what, cmd)
    elif isinstance(cmd, ConfigSt):
        m.config_st(what, cmd)
    elif isinstance(cmd, Mvin):
        m.mvin(what, cmd)
    elif isinstance(cmd, Mvout):
        m.mvout(what, cmd)
    elif isinstance(cmd, Preload):
        m.preload(what, pc, cmd)
    elif isinstance(cmd, (ComputePreloaded, ComputeAccumulated)):
        m.compute(what, cmd)
    # Flush acts on the TLB only: nothing functional.
    return kind


def finish(m: _Machine) -> tuple[np.ndarray, Counters]:
    """The end of a run: no preload may be left waiting; the final image and counters."""
    if m.pending is not None:
        raise ProgramError(f"the program ends with the preload of command {m.pending[0]}, which no "
                           "compute consumes")
    t = m.tally
    return m.dram, Counters(dict(t.commands), t.load_bytes, t.store_bytes, t.macs)


def run_program(program: bytes, dram: np.ndarray, dram_base: int,
                cfg: GemminiConfig) -> tuple[np.ndarray, Counters]:
    """Decode program.bin with the model's own reader, then `run` it."""
    try:
        cmds = decode_program(program)
    except ValueError as exc:
        raise ProgramError(f"program.bin: {exc}") from None
    return run(cmds, dram, dram_base, cfg)
