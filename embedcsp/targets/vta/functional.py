"""Bit-exact functional model of VTA (docs/vta.md sections 3 to 6), vectorised per instruction.

It runs the load, compute and store modules like fsim (each in program order,
each until it blocks on a token), and refuses programs that are wrong on real
hardware even where fsim would not notice:
  - a race: two modules touch one SRAM element, one writing, with no chain of
    tokens ordering them (checked with vector clocks, whatever the schedule);
  - a deadlock, a token left in a queue, work not ordered before FINISH;
  - an index outside its buffer, a DRAM access outside the image;
  - a GEMM that writes an ACC element within two micro-ops of a previous write
    (the pipeline hazard HLS does not check);
  - weight loads with padding (HLS ignores it), stores from other than OUT.

How it keeps up with the programs it checks (docs/vta.md, "The model's speed"):
the binary is decoded in one pass into columns (decode.py, `decode_table`);
what a GEMM or ALU instruction touches is worked out once per distinct
instruction and micro-op kernel, not once per execution; LOAD and STORE move
strided views of the DRAM image, never per-byte address lists; and a GEMM whose
micro-ops form a dense block product is one float32 matrix product read
straight out of the scratchpads. INP and WGT hold their int8 values as float32
(WGT split into one plane per output lane, so a block of weight elements is a
plain strided matrix), and each product sums at most 1024 int8 x int8 terms,
so every partial sum is an integer of magnitude at most 2^24, which float32
holds exactly; the results wrap into the int32 accumulators like the hardware.
Any other GEMM goes through the pattern's own einsum, one micro-op at a time.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections import deque, namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import cache

import numpy as np

from embedcsp.errors import ProgramError
from embedcsp.pattern import Pattern
from embedcsp.progress import SILENT, Progress
from embedcsp.targets.vta.config import (
    MEM_ACC,
    MEM_ACC_8BIT,
    MEM_INP,
    MEM_OUT,
    MEM_UOP,
    MEM_WGT,
    VtaConfig,
)
from embedcsp.targets.vta.decode import COLUMNS, decode_table, decode_uops
from embedcsp.targets.vta.encoding import (
    ALU_ADD,
    ALU_MAX,
    ALU_MIN,
    ALU_NAMES,
    ALU_SHR,
    OP_LOAD,
    AluInsn,
    FinishInsn,
    GemmInsn,
    Insn,
    MemInsn,
)
from embedcsp.targets.vta.hazard import gemm_hazard

LOAD, COMPUTE, STORE = 0, 1, 2
MODULE_NAMES = ("load", "compute", "store")
MEM_NAMES = {MEM_UOP: "UOP", MEM_WGT: "WGT", MEM_INP: "INP", MEM_ACC: "ACC", MEM_OUT: "OUT",
             MEM_ACC_8BIT: "ACC_8BIT"}
# (module, flag) -> queue; None where the module has no such queue.
QUEUES = {
    (LOAD, "pop_next"): "g2l", (LOAD, "push_next"): "l2g",
    (COMPUTE, "pop_prev"): "l2g", (COMPUTE, "pop_next"): "s2g",
    (COMPUTE, "push_prev"): "g2l", (COMPUTE, "push_next"): "g2s",
    (STORE, "pop_prev"): "g2s", (STORE, "push_prev"): "s2g",
}
# The model's own opcode numbers (decode.py reads them; docs/vta.md section 2).
_LOAD_OP, _STORE_OP, _GEMM_OP, _FINISH_OP, _ALU_OP = range(5)
_KIND_NAMES = {0: "MemInsn", 1: "MemInsn", 2: "GemmInsn", 3: "FinishInsn", 4: "AluInsn"}
# int8 x int8 products are at most 2^14 in magnitude, so 1024 of them sum to at most
# 2^24: every partial sum of a float32 product of that depth is an exact integer.
_F32_TERMS = 2**24 // (128 * 128)
_PLAN_CACHE = 4096  # distinct GEMM/ALU instructions remembered per run

# One decoded instruction: every field of every kind, zero where its kind has none.
Row = namedtuple("Row", COLUMNS)


@dataclass
class Counters:
    gemm_uops: int = 0  # non-reset GEMM micro-ops, as fsim's gemm_counter
    alu_uops: int = 0
    load_bytes: dict[str, int] = field(default_factory=lambda: {"UOP": 0, "INP": 0, "WGT": 0, "ACC": 0})
    store_bytes: int = 0
    insns: dict[str, int] = field(default_factory=lambda: {"load": 0, "compute": 0, "store": 0})

    def as_dict(self) -> dict:
        return {"gemm_uops": self.gemm_uops, "alu_uops": self.alu_uops,
                "load_bytes": dict(self.load_bytes), "store_bytes": self.store_bytes,
                "insns": dict(self.insns)}


def module_of(insn: Insn) -> int:
    """Routing of fetch (docs/vta.md section 3)."""
    if isinstance(insn, MemInsn):
        if insn.opcode != OP_LOAD:
            return STORE
        return LOAD if insn.memory_type in (MEM_INP, MEM_WGT) else COMPUTE
    return COMPUTE


def _module(row: Row) -> int:
    """`module_of` for a decoded row."""
    if row.opcode == _LOAD_OP:
        return LOAD if row.memory_type in (MEM_INP, MEM_WGT) else COMPUTE
    return STORE if row.opcode == _STORE_OP else COMPUTE


def row_of(insn: Insn) -> Row:
    """An instruction record as the row the decoder would give for its binary."""
    values = dict.fromkeys(COLUMNS, 0)
    for flag in ("pop_prev", "pop_next", "push_prev", "push_next"):
        values[flag] = int(getattr(insn.deps, flag))
    values["opcode"] = {GemmInsn: _GEMM_OP, FinishInsn: _FINISH_OP, AluInsn: _ALU_OP}.get(
        type(insn), getattr(insn, "opcode", _LOAD_OP))
    for f in fields(insn):
        if f.name not in ("deps", "opcode"):
            values[f.name] = int(getattr(insn, f.name))
    return Row(**values)


@dataclass(frozen=True, eq=False)
class _Where:
    """The distinct elements an instruction touches in one buffer: a slice when they are a run."""

    at: slice | np.ndarray
    lo: int
    hi: int  # the largest index touched

    @staticmethod
    def of(idx: np.ndarray) -> _Where:
        u = np.unique(idx)
        lo, hi = int(u[0]), int(u[-1])
        return _Where(slice(lo, hi + 1) if len(u) == hi - lo + 1 else u, lo, hi)


class _Tracker:
    """Per module, the last write and the last access (read or write) of every element of a buffer.

    A race is an access to an element that another module wrote (or, for a write, read or
    wrote) after the last of its instructions this module has seen by tokens. Checking every
    module's last write, not only the last writer's, gives the same verdict: a later writer
    ordered after an earlier one carries the earlier one's clock, so whoever is ordered after
    the later one is ordered after both.
    """

    def __init__(self, name: str, depth: int):
        self.name = name
        self.wrote = np.zeros((3, depth), np.int64)
        self.touched = np.zeros((3, depth), np.int64)
        self.users: set[int] = set()

    def read(self, at, module: int, seq: int, vc, what: str) -> None:
        for other in self.users:
            if other != module and self.wrote[other, at].max() > vc[other]:
                raise ProgramError(f"race on {self.name}: {what} reads an element that another module "
                                   "writes with no token ordering the two")
        self.touched[module, at] = seq
        self.users.add(module)

    def write(self, at, module: int, seq: int, vc, what: str) -> None:
        for other in self.users:
            if other != module and self.touched[other, at].max() > vc[other]:
                raise ProgramError(f"race on {self.name}: {what} writes an element that another module "
                                   "reads or writes with no token ordering the two")
        self.wrote[module, at] = seq
        self.touched[module, at] = seq
        self.users.add(module)


@dataclass(frozen=True, eq=False)
class _Dense:
    """A GEMM whose (y, x, micro-op) nest is a block product: acc[R, J] += inp[R, L] . wgt[J, L]."""

    inp_idx: np.ndarray  # [R, L] INP elements
    wgt_idx: np.ndarray  # [J, L] WGT elements
    acc_idx: np.ndarray  # [R, J] ACC elements
    inp_view: tuple[int, int] | None  # (first element, row stride) when each row of inp_idx is a run
    wgt_view: tuple[int, int, int] | None  # (first element, j stride, l stride) when strided
    acc_view: tuple[int, int, int] | None  # (first, row stride, col stride) when distinct and strided
    acc_unique: bool


@dataclass(frozen=True, eq=False)
class _GemmPlan:
    """What one GEMM instruction with one micro-op kernel touches and how to compute it."""

    hazard: bool
    uops: int
    acc: _Where
    inp: _Where | None  # None for a reset
    wgt: _Where | None
    dense: _Dense | None  # None: the generic path over `flat`
    flat: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # acc, inp, wgt per (y, x, u)


@dataclass(frozen=True, eq=False)
class _AluPlan:
    dst: np.ndarray  # per (y, x, u)
    src: np.ndarray
    dst_at: _Where
    src_at: _Where
    independent: bool  # no micro-op reads what an earlier one of the same instruction wrote


def _stride(offsets: np.ndarray) -> int | None:
    """s >= 0 if offsets are 0, s, 2s, ...; else None."""
    if len(offsets) == 1:
        return 0
    s = int(offsets[1] - offsets[0])
    if s < 0 or offsets[0] != 0 or not np.array_equal(offsets, s * np.arange(len(offsets))):
        return None
    return s


def _gemm_plan(insn, d: np.ndarray, s: np.ndarray, w: np.ndarray) -> _GemmPlan:
    """A pure function of the instruction's loop fields and its micro-ops."""
    n_out, n_in = insn.iter_out, insn.iter_in
    axes = [  # (offsets of acc, inp, wgt) along each loop axis
        (np.arange(n_out) * insn.dst_factor_out, np.arange(n_out) * insn.src_factor_out,
         np.arange(n_out) * insn.wgt_factor_out),
        (np.arange(n_in) * insn.dst_factor_in, np.arange(n_in) * insn.src_factor_in,
         np.arange(n_in) * insn.wgt_factor_in),
        (d - d[0], s - s[0], w - w[0]),
    ]
    base = (int(d[0]), int(s[0]), int(w[0]))
    flat = tuple((base[k] + axes[0][k][:, None, None] + axes[1][k][None, :, None]
                  + axes[2][k][None, None, :]).reshape(-1) for k in range(3))
    uops = n_out * n_in * len(d)
    if insn.reset:  # writing zero twice loses nothing: no hazard check
        return _GemmPlan(False, uops, _Where.of(flat[0]), None, None, None, None)
    hazard = gemm_hazard(d, n_out, n_in, insn.dst_factor_out, insn.dst_factor_in)
    where = [_Where.of(f) for f in flat]
    roles = _dense_roles(axes[:2] + _factor_uops(axes[2]))
    if roles is None:
        return _GemmPlan(hazard, uops, where[0], where[1], where[2], None, flat)
    (aR, iR), (aJ, wJ), (iL, wL) = roles
    a0, i0, w0 = base
    acc_idx = a0 + aR[:, None] + aJ[None, :]
    unique = len(np.unique(acc_idx)) == acc_idx.size
    sr, sj, sl = _stride(iR), _stride(wJ), _stride(wL)
    ar, aj = _stride(aR), _stride(aJ)
    dense = _Dense(
        inp_idx=i0 + iR[:, None] + iL[None, :],
        wgt_idx=w0 + wJ[:, None] + wL[None, :],
        acc_idx=acc_idx,
        inp_view=(i0, sr) if (len(iL) == 1 or _stride(iL) == 1) and sr is not None else None,
        wgt_view=(w0, sj, sl) if sj is not None and sl is not None else None,
        acc_view=(a0, ar, aj) if unique and ar is not None and aj is not None else None,
        acc_unique=unique,
    )
    return _GemmPlan(hazard, uops, where[0], where[1], where[2], dense, None)


def _alu_plan(insn, d: np.ndarray, s: np.ndarray) -> _AluPlan:
    y = np.arange(insn.iter_out)[:, None, None]
    x = np.arange(insn.iter_in)[None, :, None]
    dst = (d[None, None, :] + y * insn.dst_factor_out + x * insn.dst_factor_in).reshape(-1)
    src = (s[None, None, :] + y * insn.src_factor_out + x * insn.src_factor_in).reshape(-1)
    independent = len(np.unique(dst)) == len(dst) and (
        bool(insn.use_imm) or not np.isin(src, dst).any() or np.array_equal(src, dst))
    return _AluPlan(dst, src, _Where.of(dst), _Where.of(src), independent)


class Machine:
    """SRAM state, queues and clocks of one run.

    INP holds its int8 values as float32 (exact), so a GEMM reads its rows in place; `inp`
    gives them back as int8, and `write_sram` sets INP, WGT or ACC, for tests and tools.
    """

    def __init__(self, cfg: VtaConfig, pattern: Pattern, dram: np.ndarray, blas: BlasThreads | None = None):
        _check_pattern(pattern)
        self.cfg, self.pattern = cfg, pattern
        self.dram = dram
        b, bi, bo = cfg.batch, cfg.block_in, cfg.block_out
        self.depth = {m: cfg.depth(m) for m in (MEM_UOP, MEM_INP, MEM_WGT, MEM_ACC)}
        self._elem = {m: cfg.elem_bytes(m) for m in (MEM_UOP, MEM_INP, MEM_WGT, MEM_ACC, MEM_ACC_8BIT)}
        self._inp = np.zeros((self.depth[MEM_INP], b, bi), np.float32)
        self.wgt = np.zeros((self.depth[MEM_WGT], bo, bi), np.int8)
        self.acc = np.zeros((self.depth[MEM_ACC], b, bo), np.int32)
        self.uop = np.zeros((3, self.depth[MEM_UOP]), np.int64)  # dst, src, wgt
        self.track = {m: _Tracker(MEM_NAMES[m], self.depth[m]) for m in self.depth}
        self.queues: dict[str, deque] = {q: deque() for q in ("l2g", "g2l", "g2s", "s2g")}
        self.counters = Counters()
        self._plans: dict[tuple, object] = {}
        self._blas = blas if blas is not None else BlasThreads(None, 1)

    @property
    def inp(self) -> np.ndarray:
        return self._inp.astype(np.int8)

    def write_sram(self, mem: int, lo: int, values: np.ndarray) -> None:
        """Set elements [lo, lo + len(values)) of INP, WGT or ACC (in VTA's element layout)."""
        hi = lo + len(values)
        if mem == MEM_INP:
            self._inp[lo:hi] = values
        elif mem == MEM_WGT:
            self.wgt[lo:hi] = values
        elif mem == MEM_ACC:
            self.acc[lo:hi] = values
        else:
            raise ValueError(f"write_sram sets INP, WGT or ACC, not memory type {mem}")

    # ---- helpers
    def _check_range(self, mem: int, lo: int, hi: int, what: str) -> None:
        if lo < 0 or hi > self.depth[mem]:
            raise ProgramError(f"{what} touches {MEM_NAMES[mem]} elements [{lo}, {hi}) "
                               f"outside the buffer's {self.depth[mem]}")

    def _check_where(self, mem: int, where: _Where, what: str) -> None:
        if where.lo < 0 or where.hi >= self.depth[mem]:
            raise ProgramError(f"{what} indexes {MEM_NAMES[mem]} element {where.hi} "
                               f"outside the buffer's {self.depth[mem]}")

    def _dram_rows(self, insn, elem: int, what: str) -> np.ndarray:
        """The bytes [y, x*elem] of a 2-D DRAM transfer, as a strided view of the image."""
        if insn.y_size == 0:
            return np.zeros((0, insn.x_size * elem), np.uint8)
        start = insn.dram_base * elem
        end = (insn.dram_base + (insn.y_size - 1) * insn.x_stride + insn.x_size) * elem
        if end > len(self.dram):
            raise ProgramError(f"{what} touches DRAM bytes up to {end - 1}, "
                               f"beyond the {len(self.dram)}-byte image")
        return _strided(self.dram, start, (insn.y_size, insn.x_size * elem), (insn.x_stride * elem, 1))

    def _plan(self, key: tuple, make):
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE:
                self._plans.clear()
            plan = self._plans[key] = make()
        return plan

    # ---- instructions
    def load(self, insn, module: int, seq: int, vc, what: str) -> None:
        if insn.x_size == 0:
            return  # a token-only NOP
        mem = insn.memory_type
        if mem not in (MEM_UOP, MEM_INP, MEM_WGT, MEM_ACC, MEM_ACC_8BIT):
            raise ProgramError(f"{what} loads into memory type {mem}, which LOAD does not support")
        y0, y1, x0, x1 = insn.y_pad_0, insn.y_pad_1, insn.x_pad_0, insn.x_pad_1
        if mem in (MEM_WGT, MEM_UOP) and (y0 or y1 or x0 or x1):
            raise ProgramError(f"{what} pads a {MEM_NAMES[mem]} load; VTA hardware ignores padding there")
        dst = MEM_ACC if mem == MEM_ACC_8BIT else mem
        cfg = self.cfg
        elem = self._elem[mem]
        raw = self._dram_rows(insn, elem, what)  # [y, x*elem] bytes
        ny, nx = insn.y_size, insn.x_size
        xt, yt = x0 + nx + x1, y0 + ny + y1
        lo, hi = insn.sram_base, insn.sram_base + xt * yt
        self._check_range(dst, lo, hi, what)
        self.counters.load_bytes[MEM_NAMES[dst]] += ny * nx * elem
        self.track[dst].write(slice(lo, hi), module, seq, vc, what)
        if mem == MEM_UOP:
            words = np.ascontiguousarray(raw).view("<u4").reshape(-1)
            self.uop[:, lo:hi] = np.stack(decode_uops(words, cfg))
            return
        if mem == MEM_INP:
            target = self._inp[lo:hi]
            values = raw.view(np.int8)
        elif mem == MEM_WGT:
            target = self.wgt[lo:hi]
            values = raw.view(np.int8)
        elif mem == MEM_ACC:
            target = self.acc[lo:hi]
            values = np.ascontiguousarray(raw).view("<i4")
        else:  # ACC_8BIT: int8 in DRAM, sign-extended into ACC
            target = self.acc[lo:hi]
            values = raw.view(np.int8)
        block = target.reshape(yt, xt, *target.shape[1:])
        if y0 or y1 or x0 or x1:
            block[...] = 0  # padding is always zero
        block[y0:y0 + ny, x0:x0 + nx] = values.reshape(ny, nx, *target.shape[1:])

    def store(self, insn, module: int, seq: int, vc, what: str) -> None:
        if insn.x_size == 0:
            return
        if insn.memory_type != MEM_OUT:
            raise ProgramError(f"{what} stores memory type {insn.memory_type}; STORE supports only OUT (4)")
        if insn.y_pad_0 or insn.y_pad_1 or insn.x_pad_0 or insn.x_pad_1:
            raise ProgramError(f"{what} has padding; STORE must not pad")
        lo, hi = insn.sram_base, insn.sram_base + insn.x_size * insn.y_size
        self._check_range(MEM_ACC, lo, hi, what)
        elem = self.cfg.out_elem_bytes
        rows = self._dram_rows(insn, elem, what)
        if hi > lo:
            self.track[MEM_ACC].read(slice(lo, hi), module, seq, vc, what)
        narrowed = self.acc[lo:hi].astype(np.int8).view(np.uint8).reshape(rows.shape)  # the low 8 bits
        if insn.y_size > 1 and insn.x_stride < insn.x_size:
            for y in range(insn.y_size):  # overlapping rows: later rows win, as written in order
                rows[y] = narrowed[y]
        else:
            rows[...] = narrowed
        self.counters.store_bytes += narrowed.size

    def _uops(self, insn, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not 0 <= insn.uop_bgn < insn.uop_end <= self.depth[MEM_UOP]:
            raise ProgramError(f"{what} has micro-op range [{insn.uop_bgn}, {insn.uop_end}) "
                               f"outside the UOP buffer's {self.depth[MEM_UOP]}")
        return tuple(self.uop[k, insn.uop_bgn:insn.uop_end] for k in range(3))  # type: ignore[return-value]

    def gemm(self, insn, module: int, seq: int, vc, what: str) -> None:
        d, s, w = self._uops(insn, what)
        self.track[MEM_UOP].read(slice(insn.uop_bgn, insn.uop_end), module, seq, vc, what)
        if insn.iter_out == 0 or insn.iter_in == 0:
            return
        key = ("gemm", bool(insn.reset), insn.iter_out, insn.iter_in, insn.dst_factor_out,
               insn.dst_factor_in, insn.src_factor_out, insn.src_factor_in, insn.wgt_factor_out,
               insn.wgt_factor_in, self.uop[:, insn.uop_bgn:insn.uop_end].tobytes())
        plan: _GemmPlan = self._plan(key, lambda: _gemm_plan(insn, d, s, w))
        if plan.hazard:
            raise ProgramError(f"{what} writes an ACC element within two micro-ops of a previous "
                               "write (pipeline hazard)")
        if insn.reset:
            self._check_where(MEM_ACC, plan.acc, what)
            self.track[MEM_ACC].write(plan.acc.at, module, seq, vc, what)
            self.acc[plan.acc.at] = 0
            return
        self.counters.gemm_uops += plan.uops
        for mem, where in ((MEM_INP, plan.inp), (MEM_WGT, plan.wgt), (MEM_ACC, plan.acc)):
            self._check_where(mem, where, what)
        self.track[MEM_INP].read(plan.inp.at, module, seq, vc, what)
        self.track[MEM_WGT].read(plan.wgt.at, module, seq, vc, what)
        self.track[MEM_ACC].write(plan.acc.at, module, seq, vc, what)
        if plan.dense is None:
            self._gemm_generic(*plan.flat)
        else:
            self._gemm_dense(plan.dense)

    def _gemm_dense(self, p: _Dense) -> None:
        """acc[R, J] += inp[R, L] . wgt[J, L] as float32 products of depth <= 1024 terms."""
        (n_r, n_l), n_j = p.inp_idx.shape, p.wgt_idx.shape[0]
        b, bi, bo = self._inp.shape[1], self._inp.shape[2], self.wgt.shape[1]
        if p.inp_view is not None and b == 1:
            first, stride = p.inp_view
            a = _strided(self._inp, first, (n_r, n_l * bi), (stride * self._inp.strides[0], self._inp.strides[2]))
        else:  # rows (r, b), columns (l, i)
            a = self._inp[p.inp_idx].transpose(0, 2, 1, 3).reshape(n_r * b, n_l * bi)
        if p.wgt_view is not None:
            first, sj, sl = p.wgt_view
            e = self.wgt.strides[0]
            blocks = _strided(self.wgt, first, (n_j, n_l, bo, bi), (sj * e, sl * e, bi, 1))
        else:
            blocks = self.wgt[p.wgt_idx]  # [j, l, o, i]
        w = np.empty((n_j * bo, n_l * bi), np.float32)  # rows (j, o), columns (l, i)
        np.copyto(w.reshape(n_j, bo, n_l, bi), blocks.transpose(0, 2, 1, 3))
        step = max(1, _F32_TERMS // bi) * bi
        total = None
        threads, start = self._blas.pick(), time.perf_counter()
        for k0 in range(0, n_l * bi, step):
            part = (a[:, k0:k0 + step] @ w[:, k0:k0 + step].T).astype(np.int32)  # exact: |part| <= 2^24
            total = part if total is None else total + part  # int32 wraps like the accumulators
        self._blas.record(threads, time.perf_counter() - start, a.shape[0] * w.shape[0] * a.shape[1])
        out = total.reshape(n_r, b, n_j, bo).transpose(0, 2, 1, 3)  # [r, j, b, o]
        if p.acc_view is not None:
            first, sr, sj = p.acc_view
            e = self.acc.strides[0]
            view = _strided(self.acc, first, (n_r, n_j, b, bo), (sr * e, sj * e, self.acc.strides[1], 4))
            view += out
        elif p.acc_unique:
            flat = p.acc_idx.reshape(-1)
            self.acc[flat] += out.reshape(-1, b, bo)
        else:
            np.add.at(self.acc, p.acc_idx.reshape(-1), out.reshape(-1, b, bo))

    def _gemm_generic(self, acc_idx: np.ndarray, inp_idx: np.ndarray, wgt_idx: np.ndarray) -> None:
        """Any micro-op pattern: every (y, x, u) gathered explicitly, through the pattern's einsum."""
        delta = np.zeros(self.acc.shape, np.int64)
        for lo in range(0, len(acc_idx), 1 << 16):
            sl = slice(lo, lo + (1 << 16))
            a = self._inp[inp_idx[sl]].astype(np.int64)                        # [n, b, i]
            w = self.wgt[wgt_idx[sl]].astype(np.int64)                          # [n, o, i]
            np.add.at(delta, acc_idx[sl], self.pattern.contract(a, w, "n", "n", "n"))
        self.acc[:] = (self.acc.astype(np.int64) + delta).astype(np.int32)

    def alu(self, insn, module: int, seq: int, vc, what: str) -> None:
        d, s, _ = self._uops(insn, what)
        self.track[MEM_UOP].read(slice(insn.uop_bgn, insn.uop_end), module, seq, vc, what)
        if insn.iter_out == 0 or insn.iter_in == 0:
            if insn.alu_opcode not in ALU_NAMES:
                raise ProgramError(f"{what} has unknown ALU opcode {insn.alu_opcode}")
            return
        key = ("alu", bool(insn.use_imm), insn.iter_out, insn.iter_in, insn.dst_factor_out,
               insn.dst_factor_in, insn.src_factor_out, insn.src_factor_in,
               self.uop[:, insn.uop_bgn:insn.uop_end].tobytes())
        plan: _AluPlan = self._plan(key, lambda: _alu_plan(insn, d, s))
        self._check_where(MEM_ACC, plan.dst_at, what)
        if not insn.use_imm:
            self._check_where(MEM_ACC, plan.src_at, what)
            self.track[MEM_ACC].read(plan.src_at.at, module, seq, vc, what)
        self.track[MEM_ACC].write(plan.dst_at.at, module, seq, vc, what)
        self.counters.alu_uops += len(plan.dst)
        if insn.alu_opcode not in ALU_NAMES:
            raise ProgramError(f"{what} has unknown ALU opcode {insn.alu_opcode}")
        dst, src = plan.dst, plan.src
        if plan.independent:
            operand = np.int64(insn.imm) if insn.use_imm else self.acc[src].astype(np.int64)
            self.acc[dst] = _alu(insn.alu_opcode, self.acc[dst].astype(np.int64), operand)
        else:  # later micro-ops read what earlier ones wrote: run them in order
            for dd, ss in zip(dst, src):
                operand = np.int64(insn.imm) if insn.use_imm else self.acc[ss].astype(np.int64)
                self.acc[dd] = _alu(insn.alu_opcode, self.acc[dd].astype(np.int64), operand)


@cache
def _openblas_local_threads():
    """OpenBLAS's per-calling-thread thread count setter (OpenBLAS 0.3.27 on), when numpy's BLAS
    is such an OpenBLAS (numpy's Linux wheels); None elsewhere."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in paths:
        try:
            setter = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
        return setter
    return None


class BlasThreads:
    """How many threads BLAS gives the model's products, chosen by measuring them as they run.

    The products are tile-sized (a few million MACs). OpenBLAS splits anything above about
    2.6e5 MACs over every core: on an idle machine that is faster, but on a busy one its
    spinning workers made such products 5 to 20 times slower than one core (measured on 2
    shared cores, and 150 times once the load rose further). So the run keeps the seconds per
    MAC of each setting (a moving average), uses the faster, and now and then probes the other,
    the more rarely the further behind it is, since the machine's load changes. Results are exact either way; only time depends on the choice.
    Without OpenBLAS's per-thread setter (another BLAS) nothing is changed.
    """

    def __init__(self, setter, cores: int):
        self._setter = setter
        self._options = (1, cores) if setter is not None and cores > 1 else ()
        self._cost = dict.fromkeys(self._options, 0.0)  # seconds per MAC, 0 = not measured yet
        self._count = 0
        self._current = None
        self._exploring = False

    def pick(self) -> int | None:
        """The thread count for the next product (set for this thread), or None if not chosen."""
        if not self._options:
            return None
        self._count += 1
        untried = [n for n in self._options if not self._cost[n]]
        best = min(self._options, key=lambda n: self._cost[n])
        other = self._options[1] if best == self._options[0] else self._options[0]
        if untried:
            choice = untried[0]
        else:
            # Probe the other setting every 32 products per factor it is behind: on a busy
            # machine two threads were 150x slower here, and each probe costs that much.
            every = min(1 << 14, max(32, int(32 * self._cost[other] / self._cost[best])))
            choice = other if self._count % every == 0 else best
        self._exploring = choice != best
        if choice != self._current:
            self._setter(choice)
            self._current = choice
        return choice

    def record(self, threads: int | None, seconds: float, macs: int) -> None:
        if threads is None or macs == 0:
            return
        rate = seconds / macs
        old = self._cost[threads]
        # A probe of the other setting stands alone (the load may have changed since the last);
        # the setting in use is averaged, so one slow product does not flip the choice.
        self._cost[threads] = rate if not old or self._exploring else 0.8 * old + 0.2 * rate


@contextmanager
def blas_threads() -> Iterator[BlasThreads]:
    """A chooser for one run; this thread's BLAS setting is restored afterwards."""
    setter = _openblas_local_threads()
    prior = setter(1) if setter is not None else None
    try:
        yield BlasThreads(setter, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    finally:
        if setter is not None:
            setter(prior)


def _strided(base: np.ndarray, first: int, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """A view of contiguous `base` from its element `first` on (callers have checked every index
    it reaches against the buffer); np.ndarray over the buffer costs far less than as_strided."""
    return np.ndarray(shape, base.dtype, buffer=base, offset=first * base.strides[0], strides=strides)


def _check_pattern(pattern: Pattern) -> None:
    """The dense path computes acc[row, col] += inp[row, red] * wgt[col, red], the only shape a
    VTA description may state (targets/vta/config.py refuses others); refuse anything else here
    too rather than compute it wrongly."""
    out, (a, b) = pattern.output, pattern.inputs
    ok = (len(out.dims) == len(a.dims) == len(b.dims) == 2 and a.dims[0] == out.dims[0]
          and b.dims[0] == out.dims[1] and a.dims[1] == b.dims[1])
    if not ok:
        raise ValueError(f"the VTA model computes acc[b,o] += inp[b,i] * wgt[o,i], not {pattern.statement()}")


def _alu(opcode: int, x: np.ndarray, y) -> np.ndarray:
    """One ALU op on int64 copies of int32 lanes; the result wraps to int32."""
    y = np.broadcast_to(y, x.shape)
    if opcode == ALU_MIN:
        r = np.minimum(x, y)
    elif opcode == ALU_MAX:
        r = np.maximum(x, y)
    elif opcode == ALU_ADD:
        r = x + y
    elif opcode == ALU_SHR:
        # fsim: operand >= 0 shifts right (arithmetic), operand < 0 shifts left.
        right = x >> np.clip(y, 0, 31)
        left = (x << np.clip(-y, 0, 31)) & 0xFFFFFFFF
        r = np.where(y >= 0, right, left)
    else:  # ALU_MUL: low 32 bits of the product
        r = (x * y) & 0xFFFFFFFF
    return (r & 0xFFFFFFFF).astype(np.uint32).view(np.int32)


def _factor_uops(offs: tuple[np.ndarray, ...]) -> list[tuple[np.ndarray, ...]]:
    """Split a kernel's micro-op axis into a product of axes, outer to inner, where it is one.

    A direct-conv kernel (taps x unrolled columns x output blocks) is such a
    product; splitting it lets the dense block-product path below run it.
    """
    n = len(offs[0])
    for m in range(2, n):
        if n % m:
            continue
        inner = tuple(o[:m] for o in offs)
        outer = tuple(o[::m] for o in offs)
        if all(np.array_equal(o.reshape(n // m, m), a[:, None] + b[None, :])
               for o, a, b in zip(offs, outer, inner)):
            return _factor_uops(outer) + _factor_uops(inner)
    return [offs]


def _dense_roles(axes):
    """Match the loop axes (y, x, micro-op factors) to a dense block product.

    Returns ((acc, inp) offsets along the row axis, (acc, wgt) along the col
    axis, (inp, wgt) along the red axis), or None when the instruction is not
    such a product (then the generic path runs). Several axes of one role are
    flattened into one, outer to inner.
    """
    want = {"R": (0, 1), "J": (0, 2), "L": (1, 2)}
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for offs in axes:
        n = len(offs[0])
        if n == 1:
            continue
        touched = {k for k in range(3) if np.any(offs[k] != 0)}
        role = next((r for r, ks in want.items() if touched <= set(ks) and touched), None)
        if role is None:
            return None
        ks = want[role]
        pair = (offs[ks[0]], offs[ks[1]])
        if role in found:
            pair = tuple((a[:, None] + b[None, :]).reshape(-1) for a, b in zip(found[role], pair))
        found[role] = pair
    for role, ks in want.items():
        # Offsets along one axis must be distinct, or two iterations would collide.
        if role in found and any(np.any(o != 0) and len(np.unique(o)) != len(o) for o in found[role]):
            return None
    zero = (np.zeros(1, np.int64), np.zeros(1, np.int64))
    return tuple(found.get(r, zero) for r in ("R", "J", "L"))




def run(insns: list[Insn], dram: np.ndarray, cfg: VtaConfig, pattern: Pattern,
        progress: Progress = SILENT) -> tuple[np.ndarray, Counters]:
    """Execute instruction records on a copy of the DRAM image; return the final image and counters.

    `progress.advance` hears the number of instructions executed so far.
    """
    return _run([row_of(i) for i in insns], dram, cfg, pattern, progress)


def run_binary(raw: bytes, dram: np.ndarray, cfg: VtaConfig, pattern: Pattern,
               progress: Progress = SILENT) -> tuple[np.ndarray, Counters]:
    """Execute a program.bin, read by the model's own decoder, as `run` does its records.

    ProgramError for bytes that are not a program (an unknown opcode, a ragged length)."""
    try:
        table = decode_table(raw, cfg)
    except ValueError as e:
        raise ProgramError(f"the binary does not decode: {e}") from e
    rows = list(map(Row._make, zip(*(table[c].tolist() for c in COLUMNS))))
    return _run(rows, dram, cfg, pattern, progress)


def _what(pc: int, row: Row, mod: int) -> str:
    return f"instruction {pc} ({_KIND_NAMES[row.opcode]}, {MODULE_NAMES[mod]})"


def _run(rows: list[Row], dram: np.ndarray, cfg: VtaConfig, pattern: Pattern,
         progress: Progress) -> tuple[np.ndarray, Counters]:
    with blas_threads() as blas:
        return _schedule(rows, Machine(cfg, pattern, dram.copy(), blas), progress)


def _schedule(rows: list[Row], m: Machine, progress: Progress) -> tuple[np.ndarray, Counters]:
    """Each module in program order until it blocks on a token, round robin, to FINISH."""
    program: list[list[tuple]] = [[], [], []]
    queues_of: dict[tuple, tuple] = {}  # (module, flags) -> (queues popped, queues pushed)
    for pc, row in enumerate(rows):
        mod = _module(row)
        key = (mod, row.pop_prev, row.pop_next, row.push_prev, row.push_next)
        found = queues_of.get(key)
        if found is None:
            # Flags a module lacks are refused before anything runs.
            what = _what(pc, row, mod)
            found = queues_of[key] = (_flags(row, mod, "pop", what), _flags(row, mod, "push", what))
        program[mod].append((pc, row, *found))
    queues = m.queues
    clock = [(0, 0, 0)] * 3
    counts = m.counters.insns
    pos = [0, 0, 0]
    executed = 0
    finished = False
    while not finished:
        moved = False
        for mod in (LOAD, COMPUTE, STORE):
            prog, name = program[mod], MODULE_NAMES[mod]
            while pos[mod] < len(prog) and not finished:
                pc, row, pops, pushes = prog[pos[mod]]
                if any(not queues[q] for q in pops):
                    break
                vc = clock[mod]
                for q in pops:
                    t = queues[q].popleft()
                    vc = (max(vc[0], t[0]), max(vc[1], t[1]), max(vc[2], t[2]))
                vc = vc[:mod] + (vc[mod] + 1,) + vc[mod + 1:]
                clock[mod] = vc
                seq = vc[mod]
                counts[name] += 1
                executed += 1
                if executed % 64 == 0:
                    progress.advance(executed, len(rows))
                op = row.opcode
                what = _what(pc, row, mod)
                if op == _FINISH_OP:
                    _finish(program, pos, vc, what)
                    finished = True
                elif op == _GEMM_OP:
                    m.gemm(row, mod, seq, vc, what)
                elif op == _ALU_OP:
                    m.alu(row, mod, seq, vc, what)
                elif mod == STORE:
                    m.store(row, mod, seq, vc, what)
                else:
                    m.load(row, mod, seq, vc, what)
                for q in pushes:
                    queues[q].append(vc)
                pos[mod] += 1
                moved = True
        if not finished and not moved:
            if all(pos[k] == len(program[k]) for k in range(3)):
                raise ProgramError("the program ended without FINISH")
            waiting = []
            for k in range(3):
                if pos[k] < len(program[k]):
                    pc, _, pops, _ = program[k][pos[k]]
                    qs = [q for q in pops if not queues[q]]
                    waiting.append(f"{MODULE_NAMES[k]} at instruction {pc} waits on {', '.join(qs)}")
            raise ProgramError("deadlock: " + "; ".join(waiting))
    left = {q: len(v) for q, v in queues.items() if v}
    if left:
        raise ProgramError("tokens left in queues at FINISH: "
                           + ", ".join(f"{q}={n}" for q, n in left.items()))
    return m.dram, m.counters


def _flags(row: Row, mod: int, kind: str, what: str) -> tuple[str, ...]:
    out = []
    for flag in (f"{kind}_prev", f"{kind}_next"):
        if getattr(row, flag):
            q = QUEUES.get((mod, flag))
            if q is None:
                raise ProgramError(f"{what} sets {flag}, which the {MODULE_NAMES[mod]} module does not have")
            out.append(q)
    return tuple(out)


def _finish(program, pos, vc, what: str) -> None:
    """FINISH must come after every instruction of every module."""
    for k in (LOAD, STORE):
        total = len(program[k])
        if vc[k] < total:
            raise ProgramError(
                f"{what}: FINISH is not ordered after the {MODULE_NAMES[k]} module's last instruction "
                f"({total - int(vc[k])} of its instructions may still run); add a token")
    if pos[COMPUTE] + 1 != len(program[COMPUTE]):
        raise ProgramError(f"{what}: instructions follow FINISH")
