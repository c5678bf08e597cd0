"""The functional model in bulk: model.py's semantics over whole arrays of records
(docs/tile.md section 10, "Batched execution").

model.run executes one record at a time, which costs tens of microseconds each; a
512x512x512 GEMM is a hundred thousand records. This path reads program.bin with its own
bulk decoder (restating docs/tile.md section 5 offset by offset), then:

1. orders: every record's vector clock (for each queue, how many of its records are ordered
   before it) is the least fixed point of "the previous record of my queue, and the records
   I wait for, with everything they are ordered after", computed queue-wide per round;
   a record ordered after itself is a deadlock;
2. checks races: the accesses to each slot, sorted by the sum of their clock (a linear
   extension of happens-before), must have every read ordered after the write before it and
   every write after the write and the reads before it; loads and stores must touch
   disjoint DRAM bytes, stores each other's too;
3. runs: loads gather tiles in bulk; computes are contracted in chunks (float64 matrix
   products where every sum is exact, else the pattern's int64 einsum); the partial sums
   of each chain of accumulating computes are prefix sums modulo the output's width, which
   is what wrapping after every instruction gives; stores write their chain's value.

Anything it does not prove well-formed (a bad field, a race, a deadlock, overlapping DRAM,
a read of an unwritten slot) is handed to model.run, so every refusal is the per-record
model's, word for word. tests/test_tile_family.py checks both paths agree.
"""

from __future__ import annotations

import math

import numpy as np

from embedcsp.errors import ProgramError
from embedcsp.targets.tile import model
from embedcsp.targets.tile.blocked import class_dims
from embedcsp.targets.tile.config import TileConfig
from embedcsp.targets.tile.model import Counters, epilogue, wrap

RECORD = 64
_QUEUE = np.array([-1, 0, 1, 2], np.int64)  # opcode -> queue
MAX_ROUNDS = 64  # rounds of the clock fixed point before the per-record model decides
CHUNK_ELEMS = 1 << 22  # output elements per chunk of the contraction


class _Refer(Exception):
    """The per-record model must decide this program."""


# ---------------------------------------------------------------- decoding

def _u(raw: np.ndarray, at: int, size: int) -> np.ndarray:
    return np.ascontiguousarray(raw[:, at:at + size]).view(f"<u{size}")[:, 0].astype(np.int64)


def decode_arrays(program: bytes, cfg: TileConfig) -> dict[str, np.ndarray]:
    """program.bin as arrays of fields; ValueError naming the first bad record, worded as
    model.decode_program words it."""
    if len(program) % RECORD:
        raise ValueError(f"program is {len(program)} bytes, not a whole number of {RECORD}-byte records")
    raw = np.frombuffer(program, np.uint8).reshape(-1, RECORD)
    opcode, operand, flags, rank = (raw[:, i].astype(np.int64) for i in range(4))
    after = np.stack([_u(raw, 4, 4), _u(raw, 8, 4), _u(raw, 12, 4)], 1)
    bad = ~np.isin(opcode, (1, 2, 3))
    q = _QUEUE[np.where(bad, 0, opcode)]
    own = after[np.arange(len(raw)), np.maximum(q, 0)]
    bad |= own != 0
    comp, load, store = opcode == 2, opcode == 1, opcode == 3
    bad |= comp & ((operand != 0) | (rank != 0) | (flags > 1) | raw[:, 28:].any(1))
    bad |= load & ((operand > 2) | (flags != 0))
    bad |= store & ((operand != 2) | (flags > 2))
    ranks = np.array([len(cfg.dims_of(n)) for n in cfg.operand_names], np.int64)
    moves = load | store
    bad |= moves & (rank != ranks[np.minimum(operand, 2)])
    bad |= moves & raw[:, 20:24].any(1)
    strides = np.ascontiguousarray(raw[:, 32:48]).view("<i4").astype(np.int64)
    valid = np.ascontiguousarray(raw[:, 48:64]).view("<u4").astype(np.int64)
    beyond = np.arange(4)[None, :] >= rank[:, None]
    bad |= moves & ((strides != 0) & beyond).any(1)
    bad |= moves & ((valid != 0) & beyond).any(1)
    if bad.any():
        pc = int(np.argmax(bad))
        try:
            model.decode_record(bytes(raw[pc]), cfg)  # the reader's own words
        except ValueError as exc:
            raise ValueError(f"record {pc}: {exc}") from None
        raise ValueError(f"record {pc}: not a valid record")  # pragma: no cover - both agree
    return {"opcode": opcode, "queue": _QUEUE[opcode], "operand": operand, "flags": flags,
            "rank": rank, "after": after, "w16": _u(raw, 16, 4), "w20": _u(raw, 20, 4),
            "w24": _u(raw, 24, 8), "strides": strides, "valid": valid}


# ---------------------------------------------------------------- ordering

def vector_clocks(queue: np.ndarray, after: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(records of each queue, [n_k, 3] clocks): the least fixed point of happens-before."""
    idx = [np.flatnonzero(queue == k) for k in range(3)]
    sizes = [len(i) for i in idx]
    for k in range(3):
        w = after[idx[k]]
        for j in range(3):
            if j != k and len(w) and int(w[:, j].max()) > sizes[j]:
                raise _Refer  # a wait that can never be met
    vc = []
    for k in range(3):
        c = after[idx[k]].copy()
        c[:, k] = np.arange(1, sizes[k] + 1)
        vc.append(c)
    for _ in range(MAX_ROUNDS):
        changed = False
        for k in range(3):
            w = after[idx[k]]
            c = vc[k]
            for j in range(3):
                if j == k:
                    continue
                rows = np.flatnonzero(w[:, j] > 0)
                if len(rows):
                    got = np.maximum(c[rows], vc[j][w[rows, j] - 1])
                    if (got != c[rows]).any():
                        c[rows] = got
                        changed = True
            new = np.maximum.accumulate(c, axis=0) if len(c) else c
            if (new != c).any():
                changed = True
            vc[k] = new
        if not changed:
            break
    else:
        raise _Refer
    # a record ordered after itself (or a later record of its queue) is a deadlock
    for k in range(3):
        w = after[idx[k]]
        c = vc[k]
        pred = np.zeros_like(c)
        pred[1:] = c[:-1]
        for j in range(3):
            if j != k:
                rows = np.flatnonzero(w[:, j] > 0)
                pred[rows] = np.maximum(pred[rows], vc[j][w[rows, j] - 1])
        if len(c) and (pred[:, k] >= np.arange(1, len(c) + 1)).any():
            raise _Refer
    return idx, vc


def _hb(vc_of: np.ndarray, q_from: np.ndarray, seq_from: np.ndarray) -> np.ndarray:
    """Whether the access with clock vc_of is ordered after (queue, seq)."""
    return vc_of[np.arange(len(q_from)), q_from] >= seq_from


def slot_sources(d: dict[str, np.ndarray], cfg: TileConfig, idx, vc) -> dict[str, np.ndarray]:
    """For each read of a slot, the record whose write it reads; _Refer on any race or a read
    of a slot nothing wrote. Keys: "a", "b" (per compute), "acc" (per accumulating compute,
    -1 otherwise) and "store" (per store): record numbers."""
    n = len(d["queue"])
    clock = np.zeros((n, 3), np.int64)
    seq = np.zeros(n, np.int64)
    for k in range(3):
        clock[idx[k]] = vc[k]
        seq[idx[k]] = np.arange(1, len(idx[k]) + 1)
    comp, load, store = idx[1], idx[0], idx[2]
    acc = d["flags"][comp] & 1
    # accesses: (record, operand, slot, reads, writes, tag)
    parts = [
        (load, d["operand"][load], d["w16"][load], 0, 1, -1),
        (comp, np.zeros(len(comp), np.int64), d["w16"][comp], 1, 0, 0),
        (comp, np.ones(len(comp), np.int64), d["w20"][comp], 1, 0, 1),
        (comp, np.full(len(comp), 2), d["w24"][comp], acc, 1, 2),
        (store, np.full(len(store), 2), d["w16"][store], 1, 0, 3),
    ]
    rec = np.concatenate([p[0] for p in parts])
    key = np.concatenate([p[1] * (1 << 33) + p[2] for p in parts])
    reads = np.concatenate([np.broadcast_to(p[3], len(p[0])) for p in parts]).astype(bool)
    writes = np.concatenate([np.broadcast_to(p[4], len(p[0])) for p in parts]).astype(bool)
    tag = np.concatenate([np.full(len(p[0]), p[5]) for p in parts])
    total = clock.sum(1)
    order = np.lexsort((total[rec], key))
    rec, key, reads, writes, tag = rec[order], key[order], reads[order], writes[order], tag[order]
    m = len(rec)
    pos = np.arange(m)
    start = np.r_[True, key[1:] != key[:-1]] if m else np.zeros(0, bool)
    group_start = np.maximum.accumulate(np.where(start, pos, 0)) if m else pos
    # the last write strictly before each access, within its slot
    last_w = np.where(writes, pos, -1)
    prev_w = np.r_[-1, np.maximum.accumulate(last_w)[:-1]] if m else last_w
    prev_w = np.where(prev_w >= group_start, prev_w, -1)
    if (reads & (prev_w < 0)).any():
        raise _Refer  # reads a slot nothing wrote before it
    q = d["queue"]
    has = prev_w >= 0
    src = rec[np.maximum(prev_w, 0)]
    # every read and every write is ordered after the write before it
    if not _hb(clock[rec[has]], q[src[has]], seq[src[has]]).all():
        raise _Refer
    # every write is ordered after the reads since the write before it
    next_w = np.where(writes, pos, m)
    nw = np.minimum.accumulate(next_w[::-1])[::-1]
    nxt = np.r_[nw[1:], m] if m else nw
    group_end = np.r_[pos[1:][start[1:]], m] if m else pos
    group_end = group_end[np.cumsum(start) - 1] if m else group_end
    r = reads & (nxt < group_end)
    if r.any():
        after_rec = rec[nxt[r]]
        if not _hb(clock[after_rec], q[rec[r]], seq[rec[r]]).all():
            raise _Refer
    out = {"a": np.zeros(len(comp), np.int64), "b": np.zeros(len(comp), np.int64),
           "acc": np.full(len(comp), -1, np.int64), "store": np.zeros(len(store), np.int64)}
    comp_pos = np.empty(n, np.int64)
    comp_pos[comp] = np.arange(len(comp))
    store_pos = np.empty(n, np.int64)
    store_pos[store] = np.arange(len(store))
    for t, name in ((0, "a"), (1, "b"), (2, "acc")):
        sel = (tag == t) & reads
        out[name][comp_pos[rec[sel]]] = src[sel]
    sel = tag == 3
    out["store"][store_pos[rec[sel]]] = src[sel]
    return out


# ---------------------------------------------------------------- DRAM

def _esz(d, cfg: TileConfig, rows: np.ndarray) -> np.ndarray:
    sizes = np.array([cfg.dtype(n).bytes for n in cfg.operand_names], np.int64)
    return np.where(d["queue"][rows] == 0, sizes[d["operand"][rows]],
                    np.where(d["flags"][rows] == 2, 4, 1))


def _spans(d, rows: np.ndarray, esz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, moves) byte spans of transfers."""
    s, v = d["strides"][rows], d["valid"][rows]
    live = np.arange(4)[None, :] < d["rank"][rows][:, None]
    moves = ~(live & (v == 0)).any(1)
    step = np.where(live, (v - 1) * s, 0)
    off = d["w24"][rows]
    lo = off + np.minimum(step, 0).sum(1)
    hi = off + np.maximum(step, 0).sum(1) + esz
    return lo, hi, moves


def _overlap(lo1, hi1, lo2, hi2) -> bool:
    """Whether any interval of the first set meets any of the second."""
    if not len(lo1) or not len(lo2):
        return False
    order = np.argsort(lo2)
    lo2, hi2 = lo2[order], hi2[order]
    reach = np.maximum.accumulate(hi2)
    # the intervals of set 2 starting before hi1: the furthest of them must end at or before lo1
    k = np.searchsorted(lo2, hi1, side="left")
    has = k > 0
    return bool((reach[np.maximum(k - 1, 0)][has] > lo1[has]).any())


def _self_overlap(lo, hi) -> bool:
    if len(lo) < 2:
        return False
    order = np.argsort(lo)
    return bool((lo[order][1:] < np.maximum.accumulate(hi[order])[:-1]).any())


def _relative(strides, valid, esz: int) -> np.ndarray:
    """Byte offsets of a transfer's elements relative to its start, [*valid, esz]."""
    from embedcsp.targets.tile.program import tile_addresses

    return tile_addresses(0, tuple(strides), tuple(valid), esz)


def _groups(d, rows: np.ndarray, esz: np.ndarray):
    """Transfers grouped by shape: (rank, esz, strides, valid, their positions in rows)."""
    key = np.concatenate([d["rank"][rows][:, None], esz[:, None], d["strides"][rows], d["valid"][rows]], 1)
    if not len(rows):
        return
    shapes, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for g, row in enumerate(shapes.tolist()):
        r, e = row[0], row[1]
        yield r, e, tuple(row[2:2 + r]), tuple(row[6:6 + r]), np.flatnonzero(inverse == g)


# ---------------------------------------------------------------- arithmetic

def _matmul_plan(cfg: TileConfig):
    """How to contract stacks of tiles with one batched matrix product: the permutations and
    shapes that take a to [n, bat, row, red], b to [n, bat, red, col], and back to the
    output's dims."""
    p = cfg.pattern
    ext = p.extents
    bat, row, col, red = (class_dims(p, c) for c in ("bat", "row", "col", "red"))
    a, b, o = (p.operand(n).dims for n in cfg.operand_names)
    a_perm = [a.index(x) for x in (*bat, *row, *red)]
    b_perm = [b.index(x) for x in (*bat, *red, *col)]
    prod = lambda dims: math.prod(ext[x] for x in dims)  # noqa: E731
    o_dims = (*bat, *row, *col)
    o_perm = [o_dims.index(x) for x in o]
    return (a_perm, (prod(bat), prod(row), prod(red)), b_perm, (prod(bat), prod(red), prod(col)),
            tuple(ext[x] for x in o_dims), o_perm)


def bound_of(cfg: TileConfig, a: np.ndarray, b: np.ndarray) -> int:
    """The largest |sum| one instruction can produce on these tiles."""
    amax = max(abs(int(a.max())), abs(int(a.min()))) if a.size else 0
    bmax = max(abs(int(b.max())), abs(int(b.min()))) if b.size else 0
    red = math.prod(e for d, e in cfg.pattern.lanes if cfg.lane_kind(d) == "reduction")
    return amax * bmax * red


def contract(cfg: TileConfig, a: np.ndarray, b: np.ndarray, bound: int | None = None) -> np.ndarray:
    """The statement over stacks of tiles, [n, *tile] each, exactly, as int64; `bound` is
    bound_of these tiles or of any stacks they come from."""
    n = len(a)
    if n == 0:
        return np.zeros((0, *cfg.tile_shape(cfg.operand_names[2])), np.int64)
    bound = bound_of(cfg, a, b) if bound is None else bound
    if bound >= 1 << 53:
        return cfg.pattern.contract(a.astype(np.int64), b.astype(np.int64), "z", "z", "z")
    # Every partial sum is an integer below the float type's exact range, so BLAS is exact.
    ftype = np.float32 if bound < 1 << 24 else np.float64
    a_perm, a_shape, b_perm, b_shape, o_shape, o_perm = _matmul_plan(cfg)
    am = a.transpose(0, *(1 + i for i in a_perm)).reshape(n, *a_shape).astype(ftype)
    bm = b.transpose(0, *(1 + i for i in b_perm)).reshape(n, *b_shape).astype(ftype)
    r = np.matmul(am, bm).reshape(n, *o_shape)
    return r.transpose(0, *(1 + i for i in o_perm)).astype(np.int64)


# ---------------------------------------------------------------- the run

def run_program_batched(program: bytes, dram: np.ndarray, cfg: TileConfig) -> tuple[np.ndarray, Counters]:
    """model.run_program(program, dram, cfg), computed in bulk."""
    try:
        d = decode_arrays(program, cfg)
    except ValueError as exc:
        raise ProgramError(f"program.bin: {exc}") from None
    dram = np.asarray(dram)
    if dram.dtype != np.uint8 or dram.ndim != 1:
        return model.run_program(program, dram, cfg)
    try:
        return _run(d, dram, cfg)
    except _Refer:
        return model.run_program(program, dram, cfg)


def _check_fields(d, cfg: TileConfig, idx) -> None:
    """What model.check_record refuses: slots beyond memory, valid beyond the lane extent."""
    names = cfg.operand_names
    slots = np.array([cfg.slots(n) for n in names], np.int64)
    load, comp, store = idx
    if (d["w16"][load] >= slots[d["operand"][load]]).any() or (d["w16"][store] >= slots[2]).any():
        raise _Refer
    if len(comp) and ((d["w16"][comp] >= slots[0]).any() or (d["w20"][comp] >= slots[1]).any()
                      or (d["w24"][comp] >= slots[2]).any()):
        raise _Refer
    for rows, op in ((load, d["operand"][load]), (store, np.full(len(store), 2))):
        for k, n in enumerate(names):
            sel = rows[op == k]
            shape = np.array(cfg.tile_shape(n) + (0,) * (4 - len(cfg.tile_shape(n))), np.int64)
            if len(sel) and (d["valid"][sel] > shape).any():
                raise _Refer


def _run(d, dram: np.ndarray, cfg: TileConfig) -> tuple[np.ndarray, Counters]:
    if max(np.bincount(d["queue"], minlength=3)) >= 1 << 31:
        raise _Refer
    idx, vc = vector_clocks(d["queue"], d["after"])
    _check_fields(d, cfg, idx)
    load, comp, store = idx
    src = slot_sources(d, cfg, idx, vc)
    # DRAM: inside the image, loads and stores disjoint, stores disjoint from each other
    l_esz, s_esz = _esz(d, cfg, load), _esz(d, cfg, store)
    l_lo, l_hi, l_mv = _spans(d, load, l_esz)
    s_lo, s_hi, s_mv = _spans(d, store, s_esz)
    for lo, hi, mv in ((l_lo, l_hi, l_mv), (s_lo, s_hi, s_mv)):
        if mv.any() and (lo[mv].min() < 0 or hi[mv].max() > len(dram)):
            raise _Refer
    if _overlap(l_lo[l_mv], l_hi[l_mv], s_lo[s_mv], s_hi[s_mv]) or _self_overlap(s_lo[s_mv], s_hi[s_mv]):
        raise _Refer
    names = cfg.operand_names
    dram = dram.copy()
    # ---- loads: every tile, in its operand's type
    tiles = {k: None for k in range(3)}
    load_row = np.full(len(d["queue"]), -1, np.int64)  # record -> row in its operand's stack
    load_bytes = 0
    for k, name in enumerate(names):
        rows = load[d["operand"][load] == k]
        load_row[rows] = np.arange(len(rows))
        dt = cfg.dtype(name)
        stack = np.zeros((len(rows), *cfg.tile_shape(name)), dt.numpy.replace("<", "="))
        sub = np.searchsorted(load, rows)
        for r, e, strides, valid, members in _groups(d, rows, l_esz[sub]):
            if 0 in valid:
                continue
            rel = _relative(strides, valid, e)
            addr = d["w24"][rows[members]].reshape(-1, *([1] * (r + 1))) + rel[None]
            raw = np.ascontiguousarray(dram[addr])
            stack[(members, *(slice(0, v) for v in valid))] = raw.view(dt.numpy)[..., 0]
            load_bytes += raw.size
        tiles[k] = stack
    # ---- computes: chains of accumulation, prefix sums modulo the output's width
    o_dt = cfg.dtype(names[2])
    n_comp = len(comp)
    comp_of = np.full(len(d["queue"]), -1, np.int64)
    comp_of[comp] = np.arange(n_comp)
    acc_src = src["acc"]
    prev_comp = np.where(acc_src >= 0, comp_of[np.maximum(acc_src, 0)], -1)
    root = np.where(prev_comp >= 0, prev_comp, np.arange(n_comp))
    while n_comp and (root != root[root]).any():
        root = root[root]
    # init of each chain: 0, or the tile a load put in the output slot
    init_load = np.where((acc_src >= 0) & (prev_comp < 0), acc_src, -1)
    out_shape = cfg.tile_shape(names[2])
    elems = max(1, math.prod(out_shape))
    chains, chain_of = np.unique(root, return_inverse=True)
    chain_of = chain_of.reshape(-1)
    running = np.zeros((len(chains), *out_shape), np.int64)
    starts = np.flatnonzero(init_load >= 0)
    if len(starts):
        running[chain_of[starts]] = tiles[2][load_row[init_load[starts]]].astype(np.int64)
    needed = np.zeros(n_comp, bool)
    store_src = src["store"]
    from_comp = comp_of[store_src] >= 0
    needed[comp_of[store_src[from_comp]]] = True
    needed_row = np.full(n_comp, -1, np.int64)
    needed_row[needed] = np.arange(int(needed.sum()))
    values = np.zeros((int(needed.sum()), *out_shape), np.int64)  # what each store reads
    perm = np.lexsort((np.arange(n_comp), chain_of))
    step = max(1, CHUNK_ELEMS // elems)
    a_row = load_row[src["a"]]
    b_row = load_row[src["b"]]
    lead = (-1, *([1] * len(out_shape)))
    bound = bound_of(cfg, tiles[0], tiles[1])
    for lo in range(0, n_comp, step):
        rows = perm[lo:lo + step]
        p = contract(cfg, tiles[0][a_row[rows]], tiles[1][b_row[rows]], bound)
        if bound > min(o_dt.hi, -o_dt.lo):
            p = wrap(p, o_dt)  # else every product already is its wrapped value
        cid = chain_of[rows]
        cs = np.cumsum(p, axis=0)
        first = np.r_[True, cid[1:] != cid[:-1]]
        seg = np.maximum.accumulate(np.where(first, np.arange(len(rows)), 0))
        base = np.where((seg > 0).reshape(lead), cs[np.maximum(seg - 1, 0)], 0)
        val = wrap(running[cid] + cs - base, o_dt)
        last = np.r_[cid[1:] != cid[:-1], True]
        running[cid[last]] = val[last]
        keep = needed[rows]
        values[needed_row[rows[keep]]] = val[keep]
    # ---- stores: the value of the chain at the compute each store reads (or a loaded tile)
    store_bytes = 0
    for r, e, strides, valid, members in _groups(d, store, s_esz):
        if 0 in valid:
            continue
        recs, srcs = store[members], store_src[members]
        c = comp_of[srcs]
        tile = np.empty((len(members), *out_shape), np.int64)
        tile[c >= 0] = values[needed_row[c[c >= 0]]]
        tile[c < 0] = tiles[2][load_row[srcs[c < 0]]]
        kinds = d["flags"][recs]
        rel = _relative(strides, valid, e)
        addr = d["w24"][recs].reshape(-1, *([1] * (r + 1))) + rel[None]
        part = tile[(slice(None), *(slice(0, v) for v in valid))]
        for kind in np.unique(kinds).tolist():
            sel = kinds == kind
            data = epilogue(part[sel], model._EPILOGUE_CODES[kind])
            dram[addr[sel].reshape(-1)] = data.reshape(-1)
            store_bytes += data.size
    counters = Counters({"load": len(load), "compute": n_comp, "store": len(store)},
                        load_bytes, store_bytes, n_comp * cfg.macs)
    return dram, counters
