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
objects per command, and only on demand, in chunks of whole steps: the largest
DeepBench GEMM has 73 million of them (290 million at DIM = 8), so a Program
holds the recipe, and its consumers (the functional model, the cycle model,
program.bin) read it chunk by chunk with bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

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
CHUNK_COMMANDS = 1 << 21  # commands per chunk: about 45 MB of arrays, 50 MB of program.bin
KIND_OF_FUNCT = {0: "config", 1: "mvin2", 2: "mvin", 3: "mvout", 4: "compute_preloaded",
                 5: "compute_accumulated", 6: "preload", 7: "flush", 14: "mvin3"}


@dataclass(frozen=True)
class Region:
    offset: int  # bytes into dram.bin
    size: int


@dataclass(frozen=True, eq=False)
class Chunk:
    """Consecutive commands of a program, the first being command `start`: the words of
    program.bin as arrays, and the plan step that issued each command (-1: prologue)."""

    start: int
    funct: np.ndarray   # uint8 per command
    rs1: np.ndarray     # uint64
    rs2: np.ndarray     # uint64
    step: np.ndarray    # int32

    def __len__(self) -> int:
        return len(self.funct)

    def to_bytes(self) -> bytes:
        """These commands' entries of program.bin."""
        return entries_bytes(self.funct, self.rs1, self.rs2)


@dataclass(frozen=True, eq=False)
class Program:
    """A Gemmini command stream, generated on demand in chunks of whole plan steps (a program
    of a large operator never exists whole in memory), with the DRAM map it expects."""

    config: GemminiConfig
    stream: _Stream                      # the generator: plan steps to commands
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
        return self.stream.length

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

    def chunks(self, max_commands: int = CHUNK_COMMANDS) -> Iterator[Chunk]:
        """The program in order, in chunks of whole plan steps of about `max_commands` each."""
        return self.stream.chunks(max_commands)

    def byte_chunks(self, max_commands: int = CHUNK_COMMANDS) -> Iterator[bytes]:
        """program.bin in consecutive pieces (their concatenation is `to_bytes()`)."""
        return (c.to_bytes() for c in self.chunks(max_commands))

    def to_bytes(self) -> bytes:
        """program.bin (docs/gemmini.md section 7): the whole stream at once."""
        return b"".join(self.byte_chunks())

    def arrays(self) -> Chunk:
        """The whole program as one chunk (for small programs and tests)."""
        parts = list(self.chunks())
        return Chunk(0, *(np.concatenate([getattr(c, k) for c in parts])
                          for k in ("funct", "rs1", "rs2", "step")))

    @property
    def counts(self) -> dict[str, int]:
        return self.stream.counts


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

    @property
    def rel(self) -> np.ndarray:
        """Packed index of each chunk's first lane relative to the tile's first."""
        return self.offset - self.offset[0]


def _ranges(axis: Axis, tile: int) -> tuple[list[_Range], np.ndarray]:
    """The tiles of an axis and a class id per tile: tiles of one class have the same real
    lanes chunk by chunk, so they get the same commands up to a DRAM offset."""
    out, classes, ids = [], [], {}
    for t0 in range(0, axis.n, tile):
        idx = np.arange(t0, min(axis.n, t0 + tile))
        r = _Range(idx, axis.valid[idx], axis.offset[idx])
        out.append(r)
        classes.append(ids.setdefault(r.valid.tobytes(), len(ids)))
    return out, np.array(classes, np.int64)


def _per_class(ranges: list[_Range], classes: np.ndarray, fn: Callable[[_Range], object]) -> list:
    """fn of every tile, computed once per class (tiles of a class have the same lanes)."""
    done: dict[int, object] = {}
    return [done[c] if c in done else done.setdefault(c, fn(r)) for r, c in zip(ranges, classes.tolist())]


def _interleave(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty(2 * len(a), a.dtype)
    out[0::2], out[1::2] = a, b
    return out


def generate(plan: Plan, epilogue: Epilogue, maps: dict[str, np.ndarray] | None = None) -> Program:
    """The program of a plan for an epilogue (saturate, requant/nearest_even or int32)."""
    emb, cfg, t = plan.embedding, plan.config, plan.tiling
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
    nb = plan.n_bats
    mats = (rows.total * reds.total, reds.total * cols.total, rows.total * cols.total * out_bytes)
    regions: dict[str, Region] = {}
    offset = 0
    for name, size in zip((a_name, b_name, c_name), mats):
        regions[name] = Region(offset, nb * size)
        offset = -(-(offset + nb * size) // PAGE) * PAGE
    stream = _Stream.of(plan, scale_bits, full, tuple(DRAM_BASE + regions[n].offset for n in (a_name, b_name, c_name)),
                        mats)
    tensors = {o.name: emb.bound[o.name] for o in pattern.operands}
    return Program(cfg, stream, regions,
                   {a_name: (rows, reds, False), b_name: (reds, cols, True), c_name: (rows, cols, False)},
                   maps, tensors, out_bytes, t.dataflow, n_bats=nb)


@dataclass(frozen=True, eq=False)
class _Stream:
    """Everything the commands of a plan's steps are made from. Commands are built per step as
    numpy arrays (funct, rs1, rs2); the steps of one tile class share their arrays up to DRAM
    offsets, so a chunk of many steps costs little more than copying."""

    plan: Plan
    sched: Schedule
    prologue: tuple[np.ndarray, np.ndarray, np.ndarray]
    row_r: list[_Range]
    col_r: list[_Range]
    red_r: list[_Range]
    row_cls: np.ndarray
    col_cls: np.ndarray
    red_cls: np.ndarray
    a_groups: list[tuple[np.ndarray, np.ndarray]]  # per reduction tile
    b_groups: list[tuple[np.ndarray, np.ndarray]]  # per column tile
    c_groups: list[tuple[np.ndarray, np.ndarray]]  # per column tile
    pitches: tuple[int, int, int]  # DRAM bytes per packed row of A, B, C
    bases: tuple[int, int, int]    # DRAM address of each region
    mats: tuple[int, int, int]     # bytes of one batch element's A, B, C
    acc_c: int                     # flag bits of the mvout source
    sizes: np.ndarray              # commands per step
    counts: dict[str, int]         # commands per kind

    @classmethod
    def of(cls, plan: Plan, scale_bits: int, full: bool, bases: tuple[int, int, int],
           mats: tuple[int, int, int]) -> _Stream:
        cfg, t, d = plan.config, plan.tiling, plan.config.DIM
        out_bytes = cfg.acc_bytes if full else cfg.elem_bytes
        rows, cols, reds = plan.rows, plan.cols, plan.reds
        pitches = (reds.total, cols.total, cols.total * out_bytes)
        prologue = [Flush(), ConfigEx(dataflow=WS_BIT if t.dataflow == WS else OS_BIT),
                    ConfigLd(slot=0, stride=pitches[0], block_stride=t.rows * d),
                    ConfigLd(slot=1, stride=pitches[1], block_stride=t.reds * d),
                    ConfigSt(stride=pitches[2], scale_bits=scale_bits)]
        words = [encode(cmd, cfg) for cmd in prologue]
        pro = (np.array([w[0] for w in words], np.uint8), np.array([w[1] for w in words], np.uint64),
               np.array([w[2] for w in words], np.uint64))
        red_merge = reds.lanes == d  # reduction chunks narrower than DIM never share a mvin
        (row_r, row_cls), (col_r, col_cls), (red_r, red_cls) = (
            _ranges(rows, t.rows), _ranges(cols, t.cols), _ranges(reds, t.reds))
        a_groups = _per_class(red_r, red_cls, lambda r: _groups(r.valid, d, cfg.max_block_len, red_merge))
        b_groups = _per_class(col_r, col_cls, lambda r: _groups(r.valid, d, cfg.max_block_len, True))
        c_groups = _per_class(col_r, col_cls, lambda r: _groups(r.valid, d, 1 if full else cfg.max_cols_elem // d,
                                                               True))
        sched = schedule(plan)
        I, J, L = sched.I, sched.J, sched.L
        nx = np.array([len(r.idx) for r in row_r], np.int64)[I]
        nc = np.array([len(r.idx) for r in col_r], np.int64)[J]
        nl = np.array([len(r.idx) for r in red_r], np.int64)[L]
        na = sched.load_a * nx * np.array([len(g[0]) for g in a_groups], np.int64)[L]
        nbl = sched.load_b * nl * np.array([len(g[0]) for g in b_groups], np.int64)[J]
        no = sched.last * nx * np.array([len(g[0]) for g in c_groups], np.int64)[J]
        pairs = nx * nc * nl
        if t.dataflow == WS:
            installs = nc * nl  # the first row chunk of each (column, reduction) installs B
        else:
            installs = nx * nc * -(-nl // t.chain)  # one compute_preloaded opens each chain
        per_kind = {"config": len(prologue) - 1, "mvin2": int(nbl.sum()), "mvin": int(na.sum()),
                    "mvout": int(no.sum()), "compute_preloaded": int(installs.sum()),
                    "compute_accumulated": int((pairs - installs).sum()), "preload": int(pairs.sum()),
                    "flush": 1}
        counts = {k: per_kind[k] for k in KIND_OF_FUNCT.values() if per_kind.get(k)}
        return cls(plan, sched, pro, row_r, col_r, red_r, row_cls, col_cls, red_cls, a_groups,
                   b_groups, c_groups, pitches, bases, mats, ACC_BIT | (READ_FULL_BIT if full else 0),
                   na + nbl + 2 * pairs + no, counts)

    @property
    def length(self) -> int:
        return len(self.prologue[0]) + int(self.sizes.sum())

    def chunks(self, max_commands: int) -> Iterator[Chunk]:
        """Chunks of whole steps, about max_commands each (one step may exceed it); the first
        starts with the prologue."""
        ends = np.cumsum(self.sizes)
        cache: dict = {}
        n, s0 = len(self.sizes), 0
        start = 0
        parts = [(*self.prologue, np.full(len(self.prologue[0]), -1, np.int32))]
        while True:
            done = int(ends[s0 - 1]) if s0 else 0
            s1 = max(s0 + 1, int(np.searchsorted(ends, done + max_commands, "right"))) if s0 < n else s0
            parts.extend(self._step(s, cache) for s in range(s0, min(s1, n)))
            chunk = Chunk(start, *(np.concatenate([p[k] for p in parts]) for k in range(4)))
            yield chunk
            start += len(chunk)
            s0, parts = s1, []
            if s0 >= n:
                return

    def _parts(self, s: int) -> list[tuple[tuple, int | None]]:
        """Step s as (key of a tile class's commands, DRAM offset to add to their addresses,
        None for pairs): its A and B mvins, its pairs, its mvouts. A key holds the tile
        indices its commands are built from last."""
        sc, plan = self.sched, self.plan
        ii, jj, ll, bt = int(sc.I[s]), int(sc.J[s]), int(sc.L[s]), int(sc.B[s])
        R, C, L = self.row_r[ii], self.col_r[jj], self.red_r[ll]
        rc, cc, lc = int(self.row_cls[ii]), int(self.col_cls[jj]), int(self.red_cls[ll])
        sa, sb, sl = int(sc.a_slot[s]), int(sc.b_slot[s]), int(sc.c_slot[s])
        (pa, pb, pc), (ba, bb, bc), (ma, mb, mc) = self.pitches, self.bases, self.mats
        out = []
        if sc.load_a[s]:
            out.append((("a", rc, lc, sa, ii, ll), ba + bt * ma + int(R.offset[0]) * pa + int(L.offset[0])))
        if sc.load_b[s]:
            out.append((("b", lc, cc, sb, ll, jj), bb + bt * mb + int(L.offset[0]) * pb + int(C.offset[0])))
        out.append((("x", rc, cc, lc, ll == 0, sa, sb, sl, ii, jj, ll), None))
        if sc.last[s]:
            out.append((("c", rc, cc, sl, ii, jj),
                        bc + bt * mc + int(R.offset[0]) * pc + int(C.offset[0]) * plan.out_bytes))
        return out

    def _part(self, key: tuple, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The commands of a tile class (DRAM addresses relative to the part's offset)."""
        cls = key[:-3] if key[0] == "x" else key[:-2]
        if cls not in cache:
            plan = self.plan
            if key[0] == "a":
                ii, ll = key[-2:]
                cache[cls] = self._mvin_a(self.row_r[ii], self.red_r[ll], plan.a_base(key[3]), self.a_groups[ll])
            elif key[0] == "b":
                ll, jj = key[-2:]
                cache[cls] = self._mvin_b(self.red_r[ll], self.col_r[jj], plan.b_base(key[3]), self.b_groups[jj])
            elif key[0] == "x":
                ii, jj, ll = key[-3:]
                pairs = _pairs_ws if plan.tiling.dataflow == WS else _pairs_os
                cache[cls] = pairs(plan, self.row_r[ii], self.col_r[jj], self.red_r[ll],
                                   plan.a_base(key[5]), plan.b_base(key[6]), plan.c_base(key[7]))
            else:
                ii, jj = key[-2:]
                cache[cls] = self._mvout(self.row_r[ii], self.col_r[jj], plan.c_base(key[3]), self.c_groups[jj])
        return cache[cls]

    def _step(self, s: int, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The commands of step s."""
        f, r1, r2 = [], [], []
        for key, offset in self._parts(s):
            pf, p1, p2 = self._part(key, cache)
            f.append(pf)
            r1.append(p1 if offset is None else (p1 + offset).astype(np.uint64))
            r2.append(p2)
        funct = np.concatenate(f)
        return funct, np.concatenate(r1), np.concatenate(r2), np.full(len(funct), s, np.int32)

    def step_sums(self, cost: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[int, int, int]]) -> np.ndarray:
        """[4, steps]: `cost` (load, execute, store) of each step's commands and their count,
        from each tile class's commands once; `cost` must not read DRAM addresses, which
        differ between the steps of a class. The prologue's commands count in step 0."""
        sc, n = self.sched, len(self.sizes)
        rc, cc, lc = self.row_cls[sc.I], self.col_cls[sc.J], self.red_cls[sc.L]
        # Per part kind: the steps that issue it, the columns of its class key (as in _parts).
        kinds = (
            ("a", sc.load_a, (rc, lc, sc.a_slot)),
            ("b", sc.load_b, (lc, cc, sc.b_slot)),
            ("x", np.ones(n, bool), (rc, cc, lc, sc.L == 0, sc.a_slot, sc.b_slot, sc.c_slot)),
            ("c", sc.last, (rc, cc, sc.c_slot)),
        )
        cache: dict = {}
        out = np.zeros((4, n), np.int64)
        for kind, issued, columns in kinds:
            steps = np.flatnonzero(issued)
            if not len(steps):
                continue
            keys = np.stack([np.asarray(c, np.int64)[steps] for c in columns], axis=1)
            classes, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
            totals = np.zeros((len(classes), 4), np.int64)
            for k, at in enumerate(first.tolist()):
                key = next(kk for kk, _ in self._parts(int(steps[at])) if kk[0] == kind)
                f, r1, r2 = self._part(key, cache)
                totals[k] = (*cost(f, r1.astype(np.uint64), r2), len(f))
            out[:, steps] += totals[inverse.reshape(-1)].T
        if n:
            out[3, 0] += len(self.prologue[0])
        return out

    def _mvin_a(self, R: _Range, L: _Range, a0: int, groups):
        """One mvin per chunk row of the A tile and run of reduction chunks: (funct, DRAM
        address relative to the tile's first byte, destination descriptor)."""
        d, tr = self.plan.config.DIM, self.plan.tiling.rows
        g0, gcols = groups
        x, g = _pairs(len(R.idx), len(g0))
        rel = R.rel[x] * self.pitches[0] + L.rel[g0[g]]
        local = a0 + (g0[g] * tr + x) * d
        return (np.full(len(x), FUNCT_MVIN, np.uint8), rel,
                descriptor_words(local, R.valid[x], gcols[g]))

    def _mvin_b(self, L: _Range, C: _Range, b0: int, groups):
        """mvin2 per reduction chunk of the B tile and run of column chunks."""
        d, tl = self.plan.config.DIM, self.plan.tiling.reds
        h0, hcols = groups
        lidx, h = _pairs(len(L.idx), len(h0))
        rel = L.rel[lidx] * self.pitches[1] + C.rel[h0[h]]
        local = b0 + (h0[h] * tl + lidx) * d
        return (np.full(len(lidx), FUNCT_MVIN2, np.uint8), rel,
                descriptor_words(local, L.valid[lidx], hcols[h]))

    def _mvout(self, R: _Range, C: _Range, c0: int, groups):
        """mvout per chunk row of the C tile and run of column chunks (blocks DIM rows apart)."""
        d, tc = self.plan.config.DIM, self.plan.tiling.cols
        q0, qcols = groups
        x, q = _pairs(len(R.idx), len(q0))
        rel = R.rel[x] * self.pitches[2] + C.rel[q0[q]] * self.plan.out_bytes
        local = (c0 + (x * tc + q0[q]) * d) | self.acc_c
        return (np.full(len(x), FUNCT_MVOUT, np.uint8), rel,
                descriptor_words(local, R.valid[x], qcols[q]))


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


def _pairs(rows: int, runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, run) pair, rows outer: one move per chunk row and run of chunks."""
    return np.repeat(np.arange(rows), runs), np.tile(np.arange(runs), rows)
