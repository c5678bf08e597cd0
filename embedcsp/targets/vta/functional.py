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
GEMM arithmetic goes through the pattern's own einsum, in float64 where every
partial sum is an exact integer, then wraps to int32 like the hardware.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

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
from embedcsp.targets.vta.decode import decode_uops
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
_EXACT = 2**53


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


class _Tracker:
    """Last writer and last reader per module of every element of one buffer."""

    def __init__(self, name: str, depth: int):
        self.name = name
        self.w_mod = np.full(depth, -1, np.int8)
        self.w_seq = np.zeros(depth, np.int64)
        self.r_seq = np.zeros((3, depth), np.int64)

    def _racing_write(self, idx, module: int, vc: np.ndarray) -> np.ndarray:
        wm = self.w_mod[idx]
        ws = self.w_seq[idx]
        return (wm >= 0) & (wm != module) & (ws > vc[np.maximum(wm, 0)])

    def read(self, idx, module: int, seq: int, vc: np.ndarray, what: str) -> None:
        if np.any(self._racing_write(idx, module, vc)):
            raise ProgramError(f"race on {self.name}: {what} reads an element that another module "
                               "writes with no token ordering the two")
        self.r_seq[module, idx] = seq

    def write(self, idx, module: int, seq: int, vc: np.ndarray, what: str) -> None:
        bad = self._racing_write(idx, module, vc)
        for other in range(3):
            if other != module:
                bad = bad | (self.r_seq[other, idx] > vc[other])
        if np.any(bad):
            raise ProgramError(f"race on {self.name}: {what} writes an element that another module "
                               "reads or writes with no token ordering the two")
        self.w_mod[idx] = module
        self.w_seq[idx] = seq


class Machine:
    """SRAM state, queues and clocks of one run."""

    def __init__(self, cfg: VtaConfig, pattern: Pattern, dram: np.ndarray):
        self.cfg, self.pattern = cfg, pattern
        self.dram = dram
        b, bi, bo = cfg.batch, cfg.block_in, cfg.block_out
        self.depth = {m: cfg.depth(m) for m in (MEM_UOP, MEM_INP, MEM_WGT, MEM_ACC)}
        self.inp = np.zeros((self.depth[MEM_INP], b, bi), np.int8)
        self.wgt = np.zeros((self.depth[MEM_WGT], bo, bi), np.int8)
        self.acc = np.zeros((self.depth[MEM_ACC], b, bo), np.int32)
        self.uop = np.zeros((3, self.depth[MEM_UOP]), np.int64)  # dst, src, wgt
        self.track = {m: _Tracker(MEM_NAMES[m], self.depth[m]) for m in self.depth}
        self.queues: dict[str, deque] = {q: deque() for q in ("l2g", "g2l", "g2s", "s2g")}
        self.clock = [np.zeros(3, np.int64) for _ in range(3)]
        self.counters = Counters()

    # ---- helpers
    def _check_range(self, mem: int, lo: int, hi: int, what: str) -> None:
        if lo < 0 or hi > self.depth[mem]:
            raise ProgramError(f"{what} touches {MEM_NAMES[mem]} elements [{lo}, {hi}) "
                               f"outside the buffer's {self.depth[mem]}")

    def _check_index(self, mem: int, idx: np.ndarray, what: str) -> None:
        if idx.size and (idx.min() < 0 or idx.max() >= self.depth[mem]):
            raise ProgramError(f"{what} indexes {MEM_NAMES[mem]} element {int(idx.max())} "
                               f"outside the buffer's {self.depth[mem]}")

    def _dram_rows(self, insn: MemInsn, elem: int, what: str) -> np.ndarray:
        """Byte addresses [y, x*elem] of a 2-D DRAM transfer."""
        rows = (insn.dram_base + np.arange(insn.y_size, dtype=np.int64)[:, None] * insn.x_stride) * elem
        addr = rows + np.arange(insn.x_size * elem, dtype=np.int64)[None, :]
        if addr.size and (addr.min() < 0 or addr.max() >= len(self.dram)):
            raise ProgramError(f"{what} touches DRAM bytes up to {int(addr.max())}, "
                               f"beyond the {len(self.dram)}-byte image")
        return addr

    # ---- instructions
    def load(self, insn: MemInsn, module: int, seq: int, vc: np.ndarray, what: str) -> None:
        if insn.x_size == 0:
            return  # a token-only NOP
        mem = insn.memory_type
        if mem not in (MEM_UOP, MEM_INP, MEM_WGT, MEM_ACC, MEM_ACC_8BIT):
            raise ProgramError(f"{what} loads into memory type {mem}, which LOAD does not support")
        pads = (insn.y_pad_0, insn.y_pad_1, insn.x_pad_0, insn.x_pad_1)
        if mem in (MEM_WGT, MEM_UOP) and any(pads):
            raise ProgramError(f"{what} pads a {MEM_NAMES[mem]} load; VTA hardware ignores padding there")
        dst = MEM_ACC if mem == MEM_ACC_8BIT else mem
        cfg = self.cfg
        elem = cfg.elem_bytes(mem)
        addr = self._dram_rows(insn, elem, what)
        xt = insn.x_pad_0 + insn.x_size + insn.x_pad_1
        yt = insn.y_pad_0 + insn.y_size + insn.y_pad_1
        lo, hi = insn.sram_base, insn.sram_base + xt * yt
        self._check_range(dst, lo, hi, what)
        raw = self.dram[addr]  # [y, x*elem] bytes
        key = MEM_NAMES[dst] if mem != MEM_ACC_8BIT else "ACC"
        self.counters.load_bytes[key] += int(raw.size)
        self.track[dst].write(slice(lo, hi), module, seq, vc, what)
        if mem == MEM_UOP:
            words = np.ascontiguousarray(raw).view("<u4").reshape(insn.y_size, insn.x_size)
            block = np.zeros((yt, xt), np.uint32)
            block[insn.y_pad_0:insn.y_pad_0 + insn.y_size, insn.x_pad_0:insn.x_pad_0 + insn.x_size] = words
            self.uop[:, lo:hi] = np.stack(decode_uops(block.reshape(-1), cfg))
            return
        if mem == MEM_INP:
            target, shape, dtype = self.inp, self.inp.shape[1:], np.int8
        elif mem == MEM_WGT:
            target, shape, dtype = self.wgt, self.wgt.shape[1:], np.int8
        elif mem == MEM_ACC:
            target, shape, dtype = self.acc, self.acc.shape[1:], np.dtype("<i4")
        else:  # ACC_8BIT: int8 in DRAM, sign-extended into ACC
            target, shape, dtype = self.acc, self.acc.shape[1:], np.int8
        values = np.ascontiguousarray(raw).view(dtype).reshape(insn.y_size, insn.x_size, *shape)
        block = np.zeros((yt, xt, *shape), target.dtype)
        block[insn.y_pad_0:insn.y_pad_0 + insn.y_size, insn.x_pad_0:insn.x_pad_0 + insn.x_size] = values
        target[lo:hi] = block.reshape(-1, *shape)

    def store(self, insn: MemInsn, module: int, seq: int, vc: np.ndarray, what: str) -> None:
        if insn.x_size == 0:
            return
        if insn.memory_type != MEM_OUT:
            raise ProgramError(f"{what} stores memory type {insn.memory_type}; STORE supports only OUT (4)")
        if any((insn.y_pad_0, insn.y_pad_1, insn.x_pad_0, insn.x_pad_1)):
            raise ProgramError(f"{what} has padding; STORE must not pad")
        lo, hi = insn.sram_base, insn.sram_base + insn.x_size * insn.y_size
        self._check_range(MEM_ACC, lo, hi, what)
        self.track[MEM_ACC].read(slice(lo, hi), module, seq, vc, what)
        elem = self.cfg.out_elem_bytes
        addr = self._dram_rows(insn, elem, what)
        narrowed = self.acc[lo:hi].astype(np.int8)  # keeps the low 8 bits
        self.dram[addr.reshape(-1)] = narrowed.reshape(-1).view(np.uint8)
        self.counters.store_bytes += int(addr.size)

    def _uops(self, insn, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not 0 <= insn.uop_bgn < insn.uop_end <= self.depth[MEM_UOP]:
            raise ProgramError(f"{what} has micro-op range [{insn.uop_bgn}, {insn.uop_end}) "
                               f"outside the UOP buffer's {self.depth[MEM_UOP]}")
        return tuple(self.uop[k, insn.uop_bgn:insn.uop_end] for k in range(3))  # type: ignore[return-value]

    def gemm(self, insn: GemmInsn, module: int, seq: int, vc: np.ndarray, what: str) -> None:
        d, s, w = self._uops(insn, what)
        self.track[MEM_UOP].read(slice(insn.uop_bgn, insn.uop_end), module, seq, vc, what)
        n_out, n_in = insn.iter_out, insn.iter_in
        if n_out == 0 or n_in == 0:
            return
        if not insn.reset and gemm_hazard(d, n_out, n_in, insn.dst_factor_out, insn.dst_factor_in):
            raise ProgramError(f"{what} writes an ACC element within two micro-ops of a previous "
                               "write (pipeline hazard)")
        axes = [  # (offsets of acc, inp, wgt) along each loop axis
            (np.arange(n_out) * insn.dst_factor_out, np.arange(n_out) * insn.src_factor_out,
             np.arange(n_out) * insn.wgt_factor_out),
            (np.arange(n_in) * insn.dst_factor_in, np.arange(n_in) * insn.src_factor_in,
             np.arange(n_in) * insn.wgt_factor_in),
            (d - d[0], s - s[0], w - w[0]),
        ]
        a0, i0, w0 = int(d[0]), int(s[0]), int(w[0])
        if insn.reset:
            acc_idx = a0 + (axes[0][0][:, None, None] + axes[1][0][None, :, None]
                            + axes[2][0][None, None, :]).reshape(-1)
            self._check_index(MEM_ACC, acc_idx, what)
            self.track[MEM_ACC].write(acc_idx, module, seq, vc, what)
            self.acc[acc_idx] = 0
            return
        self.counters.gemm_uops += n_out * n_in * len(d)
        roles = _dense_roles(axes[:2] + _factor_uops(axes[2]))
        if roles is None:
            self._gemm_generic(axes, a0, i0, w0, module, seq, vc, what)
            return
        (aR, iR), (aJ, wJ), (iL, wL) = roles
        inp_idx = (i0 + iR[:, None] + iL[None, :])
        wgt_idx = (w0 + wJ[:, None] + wL[None, :])
        acc_idx = (a0 + aR[:, None] + aJ[None, :])
        for mem, idx in ((MEM_INP, inp_idx), (MEM_WGT, wgt_idx), (MEM_ACC, acc_idx)):
            self._check_index(mem, idx, what)
        self.track[MEM_INP].read(inp_idx.reshape(-1), module, seq, vc, what)
        self.track[MEM_WGT].read(wgt_idx.reshape(-1), module, seq, vc, what)
        self.track[MEM_ACC].write(acc_idx.reshape(-1), module, seq, vc, what)
        a = self.inp[inp_idx].astype(np.float64)  # [R, L, b, i]
        b = self.wgt[wgt_idx].astype(np.float64)  # [J, L, o, i]
        assert a.shape[1] * a.shape[-1] * 128 * 128 < _EXACT
        part = self.pattern.contract(a, b, "rl", "jl", "rj").astype(np.int64)  # [R, J, b, o]
        flat = acc_idx.reshape(-1)
        part = part.reshape(len(flat), *part.shape[2:])
        if len(np.unique(flat)) == len(flat):
            self.acc[flat] = (self.acc[flat].astype(np.int64) + part).astype(np.int32)
        else:
            delta = np.zeros(self.acc.shape, np.int64)
            np.add.at(delta, flat, part)
            self.acc[:] = (self.acc.astype(np.int64) + delta).astype(np.int32)

    def _gemm_generic(self, axes, a0, i0, w0, module, seq, vc, what) -> None:
        """Any micro-op pattern: every (y, x, u) gathered explicitly."""
        grids = [a0, i0, w0]
        idx = []
        for k in range(3):
            g = (axes[0][k][:, None, None] + axes[1][k][None, :, None] + axes[2][k][None, None, :])
            idx.append((grids[k] + g).reshape(-1))
        acc_idx, inp_idx, wgt_idx = idx
        for mem, ix in ((MEM_INP, inp_idx), (MEM_WGT, wgt_idx), (MEM_ACC, acc_idx)):
            self._check_index(mem, ix, what)
        self.track[MEM_INP].read(inp_idx, module, seq, vc, what)
        self.track[MEM_WGT].read(wgt_idx, module, seq, vc, what)
        self.track[MEM_ACC].write(acc_idx, module, seq, vc, what)
        delta = np.zeros(self.acc.shape, np.int64)
        for lo in range(0, len(acc_idx), 1 << 16):
            sl = slice(lo, lo + (1 << 16))
            part = self.pattern.contract(self.inp[inp_idx[sl]].astype(np.int64),
                                         self.wgt[wgt_idx[sl]].astype(np.int64), "n", "n", "n")
            np.add.at(delta, acc_idx[sl], part)
        self.acc[:] = (self.acc.astype(np.int64) + delta).astype(np.int32)

    def alu(self, insn: AluInsn, module: int, seq: int, vc: np.ndarray, what: str) -> None:
        d, s, _ = self._uops(insn, what)
        self.track[MEM_UOP].read(slice(insn.uop_bgn, insn.uop_end), module, seq, vc, what)
        y = np.arange(insn.iter_out)[:, None, None]
        x = np.arange(insn.iter_in)[None, :, None]
        dst = (d[None, None, :] + y * insn.dst_factor_out + x * insn.dst_factor_in).reshape(-1)
        src = (s[None, None, :] + y * insn.src_factor_out + x * insn.src_factor_in).reshape(-1)
        self._check_index(MEM_ACC, dst, what)
        if not insn.use_imm:
            self._check_index(MEM_ACC, src, what)
            self.track[MEM_ACC].read(src, module, seq, vc, what)
        self.track[MEM_ACC].write(dst, module, seq, vc, what)
        self.counters.alu_uops += len(dst)
        if insn.alu_opcode not in ALU_NAMES:
            raise ProgramError(f"{what} has unknown ALU opcode {insn.alu_opcode}")
        independent = len(np.unique(dst)) == len(dst) and (
            insn.use_imm or not np.isin(src, dst).any() or np.array_equal(src, dst))
        if independent:
            operand = np.int64(insn.imm) if insn.use_imm else self.acc[src].astype(np.int64)
            self.acc[dst] = _alu(insn.alu_opcode, self.acc[dst].astype(np.int64), operand)
        else:  # later micro-ops read what earlier ones wrote: run them in order
            for dd, ss in zip(dst, src):
                operand = np.int64(insn.imm) if insn.use_imm else self.acc[ss].astype(np.int64)
                self.acc[dd] = _alu(insn.alu_opcode, self.acc[dd].astype(np.int64), operand)


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
    """Execute a program on a copy of the DRAM image; return the final image and counters.

    `progress.advance` hears the number of instructions executed so far.
    """
    m = Machine(cfg, pattern, dram.copy())
    executed = 0
    program = [[], [], []]
    for pc, insn in enumerate(insns):
        mod = module_of(insn)
        what = f"instruction {pc} ({type(insn).__name__}, {MODULE_NAMES[mod]})"
        _flags(insn, mod, "pop", what)  # refuse flags a module lacks before running anything
        _flags(insn, mod, "push", what)
        program[mod].append((pc, insn))
    pos = [0, 0, 0]
    finished = False
    while not finished:
        moved = False
        for mod in (LOAD, COMPUTE, STORE):
            while pos[mod] < len(program[mod]) and not finished:
                pc, insn = program[mod][pos[mod]]
                what = f"instruction {pc} ({type(insn).__name__}, {MODULE_NAMES[mod]})"
                pops = _flags(insn, mod, "pop", what)
                if any(not m.queues[q] for q in pops):
                    break
                vc = m.clock[mod]
                for q in pops:
                    vc = np.maximum(vc, m.queues[q].popleft())
                vc = vc.copy()
                vc[mod] += 1
                m.clock[mod] = vc
                seq = int(vc[mod])
                m.counters.insns[MODULE_NAMES[mod]] += 1
                executed += 1
                if executed % 64 == 0:
                    progress.advance(executed, len(insns))
                if isinstance(insn, FinishInsn):
                    _finish(m, program, pos, vc, what)
                    finished = True
                elif isinstance(insn, GemmInsn):
                    m.gemm(insn, mod, seq, vc, what)
                elif isinstance(insn, AluInsn):
                    m.alu(insn, mod, seq, vc, what)
                elif mod == STORE:
                    m.store(insn, mod, seq, vc, what)
                else:
                    m.load(insn, mod, seq, vc, what)
                for q in _flags(insn, mod, "push", what):
                    m.queues[q].append(vc.copy())
                pos[mod] += 1
                moved = True
        if not finished and not moved:
            if all(pos[k] == len(program[k]) for k in range(3)):
                raise ProgramError("the program ended without FINISH")
            waiting = []
            for k in range(3):
                if pos[k] < len(program[k]):
                    pc, insn = program[k][pos[k]]
                    qs = [q for q in _flags(insn, k, "pop", "") if not m.queues[q]]
                    waiting.append(f"{MODULE_NAMES[k]} at instruction {pc} waits on {', '.join(qs)}")
            raise ProgramError("deadlock: " + "; ".join(waiting))
    left = {q: len(v) for q, v in m.queues.items() if v}
    if left:
        raise ProgramError("tokens left in queues at FINISH: "
                           + ", ".join(f"{q}={n}" for q, n in left.items()))
    return m.dram, m.counters


def _flags(insn: Insn, mod: int, kind: str, what: str) -> list[str]:
    deps = insn.deps
    out = []
    for flag in (f"{kind}_prev", f"{kind}_next"):
        if getattr(deps, flag):
            q = QUEUES.get((mod, flag))
            if q is None:
                raise ProgramError(f"{what} sets {flag}, which the {MODULE_NAMES[mod]} module does not have")
            out.append(q)
    return out


def _finish(m: Machine, program, pos, vc: np.ndarray, what: str) -> None:
    """FINISH must come after every instruction of every module."""
    for k in (LOAD, STORE):
        total = len(program[k])
        if vc[k] < total:
            raise ProgramError(
                f"{what}: FINISH is not ordered after the {MODULE_NAMES[k]} module's last instruction "
                f"({total - int(vc[k])} of its instructions may still run); add a token")
    if pos[COMPUTE] + 1 != len(program[COMPUTE]):
        raise ProgramError(f"{what}: instructions follow FINISH")
