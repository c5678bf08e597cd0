"""Gemmini code generation: a plan in, a command stream (as arrays) and its DRAM map out.

Prologue: flush, config_ex (the plan's dataflow), config_ld slot 0 (A: DRAM
pitch, block stride = one A column of tiles), slot 1 (B), config_st (C pitch,
the epilogue's read-out scale). Then per tile step, in plan order:

  mvin   A tiles of the step (if not already in their slot): one command per chunk row
         and run of up to MAX_BLOCK_LEN consecutive full reduction chunks
  mvin2  B tiles likewise, per reduction chunk and run of column chunks
  WS     for c, for l: preload(B(l,c), C(x0,c)) + compute_preloaded(A(x0,l)), then for
         the other rows x: preload(GARBAGE, C(x,c)) + compute_accumulated(A(x,l))
  OS     for c, for x, chains of l: preload(GARBAGE, GARBAGE...) + compute(A(x,l), B(l,c)),
         the chain's last pair naming C(x,c) in the accumulator
  mvout  after the last reduction step, C tiles: int8 through the read-out scale, or
         raw int32 with the read-full bit (one block per mvout)

C is written with the accumulate bit except by the first reduction chunk,
which overwrites (so the accumulator never needs clearing). Every operand of a
compute is exactly the rows x cols the mvins wrote (partial chunks use smaller
counts, never padding), so no command reads memory nothing wrote.

Commands are built per step as numpy arrays (funct, rs1, rs2), never as Python
objects per command: the largest DeepBench GEMM has 70 million of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from embedcsp.errors import BadInput
from embedcsp.layout import element_map
from embedcsp.reference import Epilogue
from embedcsp.targets.gemmini.commands import (
    ACC_BIT,
    ACCUMULATE_BIT,
    FUNCT_COMPUTE_ACCUMULATED,
    FUNCT_COMPUTE_PRELOADED,
    FUNCT_MVIN,
    FUNCT_MVIN2,
    FUNCT_MVOUT,
    FUNCT_PRELOAD,
    GARBAGE,
    READ_FULL_BIT,
    ConfigEx,
    ConfigLd,
    ConfigSt,
    Flush,
    descriptor_words,
    encode,
    entries_bytes,
    epilogue_readout,
)
from embedcsp.targets.gemmini.commands import (
    OS as OS_BIT,
)
from embedcsp.targets.gemmini.commands import (
    WS as WS_BIT,
)
from embedcsp.targets.gemmini.config import GemminiConfig
from embedcsp.targets.gemmini.plan import WS, Axis, Plan, fits

DRAM_BASE = 4096  # main-memory address of dram.bin's first byte (docs/gemmini.md section 7)
PAGE = 4096       # regions start on page boundaries
KIND_OF_FUNCT = {0: "config", 1: "mvin2", 2: "mvin", 3: "mvout", 4: "compute_preloaded",
                 5: "compute_accumulated", 6: "preload", 7: "flush", 14: "mvin3"}


@dataclass(frozen=True)
class Region:
    offset: int  # bytes into dram.bin
    size: int


@dataclass(frozen=True, eq=False)
class Program:
    """A Gemmini command stream as arrays, with the DRAM map it expects."""

    config: GemminiConfig
    funct: np.ndarray   # uint8 per command
    rs1: np.ndarray     # uint64
    rs2: np.ndarray     # uint64
    step: np.ndarray    # int32: the plan step that issued each command (-1: prologue)
    regions: dict[str, Region]          # pattern operand -> packed matrix in dram.bin
    # pattern operand -> (packed rows, packed columns, whether the element map is [col, row, ...])
    axes: dict[str, tuple[Axis, Axis, bool]]
    element_maps: dict[str, np.ndarray]  # pattern operand -> tensor flat index per packed lane
    tensors: dict[str, str]             # pattern operand -> operator tensor
    out_bytes: int
    dataflow: str
    dram_base: int = DRAM_BASE
    extra: dict = field(default_factory=dict)
    n_bats: int = 1  # batch elements, each with its own matrices after the previous one's

    def __len__(self) -> int:
        return len(self.funct)

    @property
    def inputs(self) -> tuple[str, str]:
        """The pattern's input operands (A, B), in the pattern's order."""
        a, b, _ = self.axes
        return a, b

    @property
    def output(self) -> str:
        return list(self.axes)[2]

    @property
    def dram_size(self) -> int:
        return max(r.offset + r.size for r in self.regions.values())

    def to_bytes(self) -> bytes:
        """program.bin (docs/gemmini.md section 7)."""
        return entries_bytes(self.funct, self.rs1, self.rs2)

    @cached_property
    def counts(self) -> dict[str, int]:
        per = np.bincount(self.funct.astype(np.int64), minlength=128)
        return {name: int(per[f]) for f, name in KIND_OF_FUNCT.items() if per[f]}


def element_maps(plan: Plan) -> dict[str, np.ndarray]:
    """The embedding's packed layouts by pattern operand (a, b, c)."""
    emb = plan.embedding
    return {o.name: element_map(emb, o.name) for o in emb.accelerator.pattern.operands}


def _groups(valid: np.ndarray, width: int, max_blocks: int, merge: bool) -> tuple[np.ndarray, np.ndarray]:
    """Runs of consecutive chunks one DMA command moves: at most max_blocks, and a chunk with
    fewer than `width` lanes ends its run (the next chunk's lanes would not start a new
    DIM-column block). Returns (first chunk of each run, columns of each run)."""
    starts, cols = [], []
    i, n = 0, len(valid)
    while i < n:
        j = i
        while merge and j + 1 < n and j - i + 1 < max_blocks and valid[j] == width:
            j += 1
        starts.append(i)
        cols.append(int(valid[i:j + 1].sum()))
        i = j + 1
    return np.array(starts, np.int64), np.array(cols, np.int64)


@dataclass(frozen=True, eq=False)
class _Range:
    """One tile's chunks along an axis."""

    idx: np.ndarray     # global chunk indices
    valid: np.ndarray
    offset: np.ndarray


def _ranges(axis: Axis, tile: int) -> list[_Range]:
    out = []
    for t0 in range(0, axis.n, tile):
        idx = np.arange(t0, min(axis.n, t0 + tile))
        out.append(_Range(idx, axis.valid[idx], axis.offset[idx]))
    return out


def _interleave(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty(2 * len(a), a.dtype)
    out[0::2], out[1::2] = a, b
    return out


def generate(plan: Plan, epilogue: Epilogue, maps: dict[str, np.ndarray] | None = None) -> Program:
    """The program of a plan for an epilogue (saturate, requant/nearest_even or int32)."""
    emb, cfg, t = plan.embedding, plan.config, plan.tiling
    d = cfg.DIM
    pattern = emb.accelerator.pattern
    a_name, b_name, c_name = pattern.inputs[0].name, pattern.inputs[1].name, pattern.output.name
    if not fits(cfg, t.rows, t.cols, t.reds, t.slots):
        raise ValueError(f"tiling {t} does not fit this Gemmini's scratchpad and accumulator")
    maps = maps if maps is not None else element_maps(plan)
    try:
        scale_bits, full = epilogue_readout(epilogue.manifest())
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    out_bytes = cfg.acc_bytes if full else cfg.elem_bytes
    assert out_bytes == plan.out_bytes, "the plan was made for another output width"
    rows, cols, reds = plan.rows, plan.cols, plan.reds
    pitch_a, pitch_b, pitch_c = reds.total, cols.total, cols.total * out_bytes
    regions: dict[str, Region] = {}
    offset = 0
    nb = plan.n_bats
    mat_a, mat_b, mat_c = rows.total * reds.total, reds.total * cols.total, rows.total * cols.total * out_bytes
    for name, size in ((a_name, nb * mat_a), (b_name, nb * mat_b), (c_name, nb * mat_c)):
        regions[name] = Region(offset, size)
        offset = -(-(offset + size) // PAGE) * PAGE
    region_a, region_b, region_c = (DRAM_BASE + regions[n].offset for n in (a_name, b_name, c_name))

    prologue = [Flush(), ConfigEx(dataflow=WS_BIT if t.dataflow == WS else OS_BIT),
                ConfigLd(slot=0, stride=pitch_a, block_stride=t.rows * d),
                ConfigLd(slot=1, stride=pitch_b, block_stride=t.reds * d),
                ConfigSt(stride=pitch_c, scale_bits=scale_bits)]
    words = [encode(cmd, cfg) for cmd in prologue]
    parts_f = [np.array([w[0] for w in words], np.uint8)]
    parts_1 = [np.array([w[1] for w in words], np.uint64)]
    parts_2 = [np.array([w[2] for w in words], np.uint64)]
    parts_s = [np.full(len(words), -1, np.int32)]

    red_merge = reds.lanes == d  # reduction chunks narrower than DIM never share a mvin
    row_r, col_r, red_r = _ranges(rows, t.rows), _ranges(cols, t.cols), _ranges(reds, t.reds)
    a_groups = [_groups(r.valid, d, cfg.max_block_len, red_merge) for r in red_r]
    b_groups = [_groups(r.valid, d, cfg.max_block_len, True) for r in col_r]
    c_blocks = 1 if full else cfg.max_cols_elem // d
    c_groups = [_groups(r.valid, d, c_blocks, True) for r in col_r]
    acc_c = ACC_BIT | (READ_FULL_BIT if full else 0)

    sched = schedule(plan)
    for s in range(len(sched.I)):
        ii, jj, ll, bt = int(sched.I[s]), int(sched.J[s]), int(sched.L[s]), int(sched.B[s])
        R, C, L = row_r[ii], col_r[jj], red_r[ll]
        base_a, base_b, base_c = region_a + bt * mat_a, region_b + bt * mat_b, region_c + bt * mat_c
        a0, b0, c0 = (plan.a_base(int(sched.a_slot[s])), plan.b_base(int(sched.b_slot[s])),
                      plan.c_base(int(sched.c_slot[s])))
        f_parts, r1_parts, r2_parts = [], [], []
        nx, nl = len(R.idx), len(L.idx)
        if sched.load_a[s]:
            g0, gcols = a_groups[ll]
            x = np.repeat(np.arange(nx), len(g0))
            g = np.tile(np.arange(len(g0)), nx)
            dram = base_a + R.offset[x] * pitch_a + L.offset[g0[g]]
            local = a0 + (g0[g] * t.rows + x) * d
            f_parts.append(np.full(len(x), FUNCT_MVIN, np.uint8))
            r1_parts.append(dram.astype(np.uint64))
            r2_parts.append(descriptor_words(local, R.valid[x], gcols[g]))
        if sched.load_b[s]:
            h0, hcols = b_groups[jj]
            lidx = np.repeat(np.arange(nl), len(h0))
            h = np.tile(np.arange(len(h0)), nl)
            dram = base_b + L.offset[lidx] * pitch_b + C.offset[h0[h]]
            local = b0 + (h0[h] * t.reds + lidx) * d
            f_parts.append(np.full(len(lidx), FUNCT_MVIN2, np.uint8))
            r1_parts.append(dram.astype(np.uint64))
            r2_parts.append(descriptor_words(local, L.valid[lidx], hcols[h]))
        f, r1, r2 = (_pairs_ws if t.dataflow == WS else _pairs_os)(plan, R, C, L, a0, b0, c0)
        f_parts.append(f)
        r1_parts.append(r1)
        r2_parts.append(r2)
        if sched.last[s]:
            q0, qcols = c_groups[jj]
            x = np.repeat(np.arange(nx), len(q0))
            q = np.tile(np.arange(len(q0)), nx)
            dram = base_c + R.offset[x] * pitch_c + C.offset[q0[q]] * out_bytes
            local = (c0 + (x * t.cols + q0[q]) * d) | acc_c
            f_parts.append(np.full(len(x), FUNCT_MVOUT, np.uint8))
            r1_parts.append(dram.astype(np.uint64))
            r2_parts.append(descriptor_words(local, R.valid[x], qcols[q]))
        step_f = np.concatenate(f_parts)
        parts_f.append(step_f)
        parts_1.append(np.concatenate(r1_parts))
        parts_2.append(np.concatenate(r2_parts))
        parts_s.append(np.full(len(step_f), s, np.int32))
    tensors = {o.name: emb.bound[o.name] for o in pattern.operands}
    return Program(cfg, np.concatenate(parts_f), np.concatenate(parts_1), np.concatenate(parts_2),
                   np.concatenate(parts_s), regions,
                   {a_name: (rows, reds, False), b_name: (reds, cols, True), c_name: (rows, cols, False)},
                   maps, tensors, out_bytes, t.dataflow, n_bats=nb)


def _pairs_ws(plan: Plan, R: _Range, C: _Range, L: _Range, a0: int, b0: int, c0: int):
    """WS: for c, for l: the first row chunk installs B(l,c), the others reuse it."""
    t, d = plan.tiling, plan.config.DIM
    nx, nc, nl = len(R.idx), len(C.idx), len(L.idx)
    c, l, x = (v.reshape(-1) for v in np.meshgrid(np.arange(nc), np.arange(nl), np.arange(nx),
                                                  indexing="ij"))
    first = x == 0
    vr, vc, vl = R.valid[x], C.valid[c], L.valid[l]
    b_addr = np.where(first, b0 + (c * t.reds + l) * d, GARBAGE)
    c_addr = (c0 + (x * t.cols + c) * d) | ACC_BIT | np.where(L.idx[l] > 0, ACCUMULATE_BIT, 0)
    pre1 = descriptor_words(b_addr, vl, vc)
    pre2 = descriptor_words(c_addr, vr, vc)
    com1 = descriptor_words(a0 + (l * t.rows + x) * d, vr, vl)
    com2 = descriptor_words(np.full(len(x), GARBAGE), vr, vc)
    funct = _interleave(np.full(len(x), FUNCT_PRELOAD, np.uint8),
                        np.where(first, FUNCT_COMPUTE_PRELOADED, FUNCT_COMPUTE_ACCUMULATED).astype(np.uint8))
    return funct, _interleave(pre1, com1), _interleave(pre2, com2)


def _pairs_os(plan: Plan, R: _Range, C: _Range, L: _Range, a0: int, b0: int, c0: int):
    """OS: for c, for x, chains of `chain` reduction chunks summed in the array; the chain's
    last pair writes C(x,c) into the accumulator (accumulating unless the chain starts the
    whole reduction)."""
    t, d = plan.tiling, plan.config.DIM
    nx, nc, nl = len(R.idx), len(C.idx), len(L.idx)
    c, x, l = (v.reshape(-1) for v in np.meshgrid(np.arange(nc), np.arange(nx), np.arange(nl),
                                                  indexing="ij"))
    pos = l % t.chain
    start = pos == 0
    end = (pos == t.chain - 1) | (l == nl - 1)
    opener = L.idx[l - pos]  # global reduction chunk that opened the chain
    vr, vc, vl = R.valid[x], C.valid[c], L.valid[l]
    c_addr = np.where(end, (c0 + (x * t.cols + c) * d) | ACC_BIT
                      | np.where(opener > 0, ACCUMULATE_BIT, 0), GARBAGE)
    pre1 = descriptor_words(np.full(len(x), GARBAGE), vr, vc)
    pre2 = descriptor_words(c_addr, vr, vc)
    com1 = descriptor_words(a0 + (l * t.rows + x) * d, vr, vl)
    com2 = descriptor_words(b0 + (c * t.reds + l) * d, vl, vc)
    funct = _interleave(np.full(len(x), FUNCT_PRELOAD, np.uint8),
                        np.where(start, FUNCT_COMPUTE_PRELOADED, FUNCT_COMPUTE_ACCUMULATED).astype(np.uint8))
    return funct, _interleave(pre1, com1), _interleave(pre2, com2)


# ---------------------------------------------------------------- the step sequence

@dataclass(frozen=True, eq=False)
class Schedule:
    """Tile steps in program order (arrays over steps)."""

    I: np.ndarray
    J: np.ndarray
    L: np.ndarray
    B: np.ndarray       # batch element
    load_a: np.ndarray  # the step moves its A tiles in (else they are in their slot already)
    load_b: np.ndarray
    a_slot: np.ndarray
    b_slot: np.ndarray
    c_slot: np.ndarray
    tile: np.ndarray    # output tile counter
    first: np.ndarray   # first reduction step of its output tile
    last: np.ndarray    # last reduction step: the tile is moved out after it


def schedule(plan: Plan) -> Schedule:
    t = plan.tiling
    nr, nc, nl = plan.tiles
    per = nr * nc * nl
    s = np.arange(per * plan.n_bats)
    B, s = s // per, s % per  # the batch loop is outermost
    L = s % nl
    if t.outer == "row":
        I, J = s // (nc * nl), (s // nl) % nc
    else:
        J, I = s // (nr * nl), (s // nl) % nr
    new = B[1:] != B[:-1]  # another batch element: other data under the same tile indices
    load_a = np.r_[True, (I[1:] != I[:-1]) | (L[1:] != L[:-1]) | new]
    load_b = np.r_[True, (J[1:] != J[:-1]) | (L[1:] != L[:-1]) | new]
    first, last = L == 0, L == nl - 1
    tile = np.cumsum(first) - 1
    return Schedule(I, J, L, B, load_a, load_b, (np.cumsum(load_a) - 1) % t.slots,
                    (np.cumsum(load_b) - 1) % t.slots, tile % t.slots, tile, first, last)


# ---------------------------------------------------------------- DRAM image and layout

def packed_index(program: Program, operand: str, lo: int = 0, hi: int | None = None,
                 batch: int = 0) -> np.ndarray:
    """Rows lo..hi of an operand's packed DRAM matrix of batch element `batch`: the tensor flat
    index each position holds, -1 for a zero (conv padding)."""
    r_axis, c_axis, transposed = program.axes[operand]
    emap = program.element_maps[operand]
    if emap.ndim == 6:  # [bat, axis0, axis1, bat lanes (1 here), lanes0, lanes1]: the element's own
        emap = emap[batch, :, :, 0]
    hi = r_axis.total if hi is None else hi
    rc, rl = r_axis.chunk_of[lo:hi, None], r_axis.lane_of[lo:hi, None]
    cc, cl = c_axis.chunk_of[None, :], c_axis.lane_of[None, :]
    if transposed:  # B: the map is [col, red, j, k], the matrix [red][col]
        return emap[cc, rc, cl, rl]
    return emap[rc, cc, rl, cl]


def _slabs(program: Program, operand: str):
    """(lo, hi) row ranges of a packed matrix, about 16 M positions each."""
    r_axis, c_axis, _ = program.axes[operand]
    step = max(1, (1 << 24) // max(1, c_axis.total))
    for lo in range(0, r_axis.total, step):
        yield lo, min(r_axis.total, lo + step)


def dram_image(program: Program, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """dram.bin: A and B packed (real lanes only), zeros where C goes."""
    dram = np.zeros(program.dram_size, np.uint8)
    for name in program.inputs:
        r_axis, c_axis, _ = program.axes[name]
        region = program.regions[name]
        values = inputs[program.tensors[name]].reshape(-1).view(np.uint8)
        mats = dram[region.offset:region.offset + region.size].reshape(program.n_bats, r_axis.total, c_axis.total)
        for bt in range(program.n_bats):
            for lo, hi in _slabs(program, name):
                idx = packed_index(program, name, lo, hi, bt)
                held = idx >= 0
                part = mats[bt, lo:hi]
                part[held] = values[idx[held]]
    return dram


def output_dram(program: Program, shape: tuple[int, ...]) -> np.ndarray:
    """Byte offset in dram.bin of every output element (its first byte), in logical shape."""
    name = program.output
    r_axis, c_axis, _ = program.axes[name]
    where = np.full(int(np.prod(shape)), -1, np.int64)
    for bt in range(program.n_bats):
        base = program.regions[name].offset + bt * r_axis.total * c_axis.total * program.out_bytes
        for lo, hi in _slabs(program, name):
            idx = packed_index(program, name, lo, hi, bt)
            pos = (np.arange(lo, hi)[:, None] * c_axis.total + np.arange(c_axis.total)[None, :])
            held = idx >= 0
            where[idx[held]] = base + pos[held] * program.out_bytes
    assert (where >= 0).all(), "an output element has no place in DRAM"
    return where.reshape(shape)


def read_output(final: np.ndarray, out_dram: np.ndarray, out_bytes: int) -> np.ndarray:
    """The output tensor from a final DRAM image: int8, or little-endian int32."""
    if out_bytes == 1:
        return final[out_dram].view(np.int8)
    idx = out_dram[..., None] + np.arange(out_bytes)
    return np.ascontiguousarray(final[idx]).view("<i4")[..., 0].astype(np.int32)


def layout_arrays(program: Program, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """layout.npz: where each tensor element lives in dram.bin (docs/bundle-format.md)."""
    out: dict[str, np.ndarray] = {}
    for name in program.inputs:
        idx = np.concatenate([packed_index(program, name, batch=bt).reshape(-1) for bt in range(program.n_bats)])
        where = np.flatnonzero(idx >= 0)
        tensor = program.tensors[name]
        out[f"{tensor}_dram"] = (program.regions[name].offset + where).astype(np.int64)
        out[f"{tensor}_index"] = idx[where].astype(np.int64)
    tensor = program.tensors[program.output]
    out[f"{tensor}_dram"] = output_dram(program, shapes[tensor])
    return out
