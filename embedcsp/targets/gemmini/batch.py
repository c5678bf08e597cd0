"""The functional model on whole runs of commands at once (docs/gemmini.md section 9).

A program of millions of preload/compute pairs cannot run one Python call per
command. `run_entries` cuts the program (as decode.read_entries read it) into
maximal runs of one class (configuration, mvins, mvouts, preload/compute
pairs) and executes each run as a few numpy operations with exactly the
per-command meaning of model.py: operands gathered for every pair, one batched
matmul, array state (WS weights, OS accumulators) carried along the run,
accumulator writes combined in program order (an overwrite resets, accumulates
add after it), mvin and mvout data moved by fancy indexing.

The batched path only takes runs it can prove well-formed by the same checks
the model makes (configs set, sizes in range, operands written, 20-bit limits,
pairing, C rows, DRAM ordering). Anything else, or any run that breaks a rule,
goes to model.step one command at a time from the same state, which then
executes or refuses it exactly as `model.run` would. Nothing is mutated before
a run is accepted, so the fallback starts from the right state.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from embedcsp.errors import ProgramError
from embedcsp.progress import SILENT, Progress
from embedcsp.targets.gemmini.commands import KINDS, kind_of
from embedcsp.targets.gemmini.config import MAX_ARRAY_PRODUCTS, GemminiConfig
from embedcsp.targets.gemmini.decode import Entries, matrix_fields
from embedcsp.targets.gemmini.model import (
    OS,
    RELU,
    WS,
    Counters,
    _Machine,
    finish,
    new_machine,
    scale_round_saturate,
    step,
    wrap_int32,
)

GARBAGE = 0xFFFFFFFF
ROW_BITS = 26
CFG, MVIN, MVOUT, EX = 0, 1, 2, 3
_CLASS = np.full(128, CFG, np.int8)
_CLASS[[1, 2, 14]] = MVIN
_CLASS[3] = MVOUT
_CLASS[[4, 5, 6]] = EX
_SLOT = np.zeros(128, np.int64)
_SLOT[[2, 1, 14]] = [0, 1, 2]
# Commands per batch: bounds the temporaries (a pair gathers three DIM x DIM tiles).
PAIRS_PER_BATCH = 16384
MOVES_PER_BATCH = 4096


def run_entries(entries: Entries, dram: np.ndarray, dram_base: int, cfg: GemminiConfig,
                progress: Progress = SILENT, batched: bool = True) -> tuple[np.ndarray, Counters]:
    """Execute a decoded program on a copy of `dram`: the final image and counters, exactly as
    `model.run` on the same commands (ProgramError for anything it refuses)."""
    return run_pieces([entries], len(entries), dram, dram_base, cfg, progress, batched)


def run_pieces(pieces: Iterable[Entries], total: int, dram: np.ndarray, dram_base: int,
               cfg: GemminiConfig, progress: Progress = SILENT,
               batched: bool = True) -> tuple[np.ndarray, Counters]:
    """`run_entries` on a program read in consecutive pieces (each `Entries.start` where the
    previous ended), so a program of any length runs in the memory of one piece; `total` is
    the program's length, for progress."""
    m = new_machine(cfg, dram, dram_base)
    kinds = {k: 0 for k in KINDS}
    at = 0
    for entries in pieces:
        if entries.start != at:
            raise ProgramError(f"program piece starts at command {entries.start}, expected {at}")
        _run_piece(m, entries, progress, total, batched)
        for k, v in _kinds(entries).items():
            kinds[k] += v
        at += len(entries)
    _, counters = finish(m)
    return m.dram, Counters(kinds, counters.load_bytes, counters.store_bytes, counters.macs)


def _run_piece(m: _Machine, entries: Entries, progress: Progress, total: int, batched: bool) -> None:
    n, base = len(entries), entries.start
    cls = _CLASS[entries.funct.astype(np.int64)]
    cuts = np.flatnonzero(np.diff(cls)) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, n]
    for s, e in zip(starts.tolist(), ends.tolist()):
        kind = int(cls[s]) if n else CFG
        size = 2 * PAIRS_PER_BATCH if kind == EX else MOVES_PER_BATCH
        pos = s
        while pos < e:
            hi = min(e, pos + size)
            if kind == EX and hi < e:
                hi = _chain_cut(entries, pos, hi)
            done = batched and kind != CFG and _BATCH[kind](m, entries, pos, hi)
            if not done:
                for pc in range(pos, hi):
                    step(m, base + pc, entries.records.get(pc) or entries.command(pc))
            pos = hi
        progress.advance(base + e, total)


def _chain_cut(en: Entries, lo: int, hi: int) -> int:
    """Where to end a batch of pairs that begins at lo: before the last pair in lo..hi whose
    compute is a compute_preloaded, so batches start OS chains (hi if there is none)."""
    opens = np.flatnonzero(en.funct[lo + 1:hi:2] == 4)
    return lo + 2 * int(opens[-1]) if len(opens) and opens[-1] > 0 else hi


def _kinds(entries: Entries) -> dict[str, int]:
    """Commands per kind, counted on the arrays (config kinds from their records)."""
    counts = {k: 0 for k in KINDS}
    names = {1: "mvin2", 2: "mvin", 3: "mvout", 4: "compute_preloaded", 5: "compute_accumulated",
             6: "preload", 14: "mvin3"}
    per = np.bincount(entries.funct.astype(np.int64), minlength=128)
    for funct, name in names.items():
        counts[name] = int(per[funct])
    for cmd in entries.records.values():
        counts[kind_of(cmd)] += 1
    return counts


# ---------------------------------------------------------------- helpers

def _plain(addr: np.ndarray) -> np.ndarray:
    """Scratchpad rows with no flag bits (bits 31:26 clear)."""
    return (addr >> ROW_BITS) == 0


def _tiles(m: _Machine, base: np.ndarray, rows: np.ndarray, cols: np.ndarray,
           absent: np.ndarray | None = None) -> np.ndarray | None:
    """DIM x DIM scratchpad tiles, element (i, k) = SP[base + i][k] for i < rows, k < cols, zero
    elsewhere and where `absent` (GARBAGE); None if any of it was never written."""
    d = m.cfg.DIM
    r = np.arange(d)
    row_ok = r[None, :] < rows[:, None]
    if absent is not None:
        row_ok &= ~absent[:, None]
    mask = row_ok[:, :, None] & (r[None, None, :] < cols[:, None, None])
    where = np.where(row_ok, base[:, None] + r[None, :], 0)
    if not (m.sp_set[where] | ~mask).all():
        return None
    return np.where(mask, m.sp[where], 0).astype(np.int64)


# ---------------------------------------------------------------- preload/compute pairs

def _ex_batch(m: _Machine, en: Entries, lo: int, hi: int) -> bool:
    cfg, d, ex = m.cfg, m.cfg.DIM, m.ex
    funct = en.funct[lo:hi]
    if (hi - lo) % 2 or m.pending is not None or ex.mode is None:
        return False
    if ex.a_transpose or ex.b_transpose or ex.a_stride != 1 or ex.c_stride != 1:
        return False
    computes = funct[1::2]
    if not ((funct[0::2] == 6).all() and ((computes == 4) | (computes == 5)).all()):
        return False
    bd, bd_r, bd_c = matrix_fields(en.rs1[lo:hi:2])
    c, c_r, c_c = matrix_fields(en.rs2[lo:hi:2])
    a, a_r, a_c = matrix_fields(en.rs1[lo + 1:hi:2])
    x, x_r, x_c = matrix_fields(en.rs2[lo + 1:hi:2])
    sizes = np.stack([bd_r, bd_c, c_r, c_c, a_r, a_c, x_r, x_c])
    if sizes.min() < 1 or sizes.max() > d:
        return False
    flip = en.funct[lo + 1:hi:2] == 4
    bd_g, x_g, c_g = bd == GARBAGE, x == GARBAGE, c == GARBAGE
    # Operands come from plain scratchpad rows; C goes to the accumulator (flags: accumulate only).
    if not ((bd_g | _plain(bd)).all() and (x_g | _plain(x)).all() and _plain(a).all()):
        return False
    c_acc = (c >> 31) & 1 == 1
    if not (c_g | (c_acc & ((c >> 26) & 0b1111 == 0))).all():
        return False
    c_row, accumulate = c & ((1 << ROW_BITS) - 1), (c >> 30) & 1 == 1
    if (~flip & ~bd_g).any() or (not flip[0] and m.pe_mode != ex.mode):
        return False
    sp_rows, acc_rows = cfg.sp_rows, cfg.acc_rows
    if ((a + a_r > sp_rows).any() or (~bd_g & (bd + bd_r > sp_rows)).any()
            or (~x_g & (x + x_r > sp_rows)).any() or (~c_g & (c_row + c_r > acc_rows)).any()):
        return False
    if (~c_g & (c_r > a_r)).any():
        return False
    chain = np.cumsum(flip)  # 0: pairs that continue the array state from before the batch
    mode = ex.mode
    if mode == WS:
        w_rows = np.r_[m.w_rows, np.where(bd_g, 0, bd_r)[flip]][chain]
        w_cols = np.r_[m.w_cols, np.where(bd_g, 0, bd_c)[flip]][chain]
        products = np.minimum(a_c, w_rows)
        if products.max() > MAX_ARRAY_PRODUCTS:
            return False
        macs = int((a_r * products * w_cols).sum())
    else:
        if (~c_g).any() and ex.shift:
            return False
        products = np.where(x_g, 0, np.minimum(a_c, x_r))
        first = np.flatnonzero(flip)
        start = np.r_[0, first][chain]  # index of the pair that opened each pair's chain
        csum = np.r_[0, np.cumsum(products)]
        before = np.where(chain == 0, m.chain_products, 0)
        total = before + csum[1:] - csum[start]
        if total.max() > MAX_ARRAY_PRODUCTS:
            return False
        wrote = np.r_[0, np.cumsum(~c_g)]
        closed_before = (wrote[:-1] - wrote[start]) > 0
        closed_before |= (chain == 0) & m.chain_closed
        if (~flip & closed_before).any():
            return False
        macs = int((a_r * products * x_c).sum())
    state = (w_rows, w_cols) if mode == WS else (total, closed_before)
    grouped = _ex_grouped(m, mode, flip, chain, int(products.max()), (a, a_r, a_c), (x, x_r, x_c, x_g),
                          (bd, bd_r, bd_c, bd_g), (c_g, c_row, c_r, c_c, accumulate))
    if grouped is False:
        return False
    if grouped is not None:
        _commit(m, mode, flip, grouped, state, c_g, macs)
        return True
    am = _tiles(m, a, a_r, a_c)
    if am is None:
        return False
    if mode == WS:
        wf = _tiles(m, bd[flip], bd_r[flip], bd_c[flip], bd_g[flip])
        dv = _tiles(m, x, x_r, x_c, x_g) if (~x_g).any() else 0
        if wf is None or dv is None:
            return False
        weights = np.concatenate([m.pe[None].astype(np.int64), wf]).astype(np.float32)
        # |sums| stay below 31 * 2^14 < 2^24, so float32 products and sums are exact.
        out = np.rint(np.matmul(am.astype(np.float32), weights[chain])).astype(np.int64)
        out = wrap_int32(out + dv)
    else:
        bv = _tiles(m, x, x_r, x_c, x_g)
        dstart = _tiles(m, bd[flip], bd_r[flip], bd_c[flip], bd_g[flip])
        if bv is None or dstart is None:
            return False
        prod = np.rint(np.matmul(am.astype(np.float32), bv.astype(np.float32))).astype(np.int64)
        if flip.all():  # chains of one compute: nothing to sum along the batch
            out = wrap_int32(dstart + prod)
        else:
            prefix = np.concatenate([np.zeros((1, d, d), np.int64), np.cumsum(prod, axis=0)])
            opened = np.concatenate([m.pe[None].astype(np.int64), dstart])
            out = wrap_int32(opened[chain] + prefix[1:] - prefix[start])
    if not _write_acc(m, out, c_g, c_row, c_r, c_c, accumulate):
        return False
    pe = out[-1].copy() if mode == OS else (wf[-1].copy() if flip.any() else m.pe)
    _commit(m, mode, flip, pe, state, c_g, macs)
    return True


def _commit(m: _Machine, mode: int, flip, pe, state, c_g, macs: int) -> None:
    """The array state the next command sees, after an accepted batch; `state` is (weight rows,
    weight columns) per pair in WS, (chain products, chain closed before) per pair in OS."""
    m.pe = pe
    m.pe_mode = mode
    if mode == WS and flip.any():
        m.w_rows, m.w_cols = int(state[0][-1]), int(state[1][-1])
    if mode == OS:
        m.chain_products = int(state[0][-1])
        m.chain_closed = bool(state[1][-1] or not c_g[-1])
    m.tally.macs += macs


def _rows_written(lead: np.ndarray, base, rows, cols, d: int) -> bool:
    """Rows base + i (i < rows) all written in their first `cols` columns."""
    r = np.arange(d)
    idx = np.minimum(base[:, None] + r, len(lead) - 1)
    need = np.where(r[None, :] < rows[:, None], cols[:, None], 0)
    return bool((lead[idx] >= need).all())


def _gather32(m: _Machine, base, rows, cols) -> np.ndarray:
    """DIM x DIM scratchpad tiles as float32, element (i, k) = SP[base + i][k] for i < rows,
    k < cols and zero elsewhere (the caller checked they were written)."""
    d = m.cfg.DIM
    r = np.arange(d)
    t = np.take(m.sp, np.minimum(base[:, None] + r, m.cfg.sp_rows - 1), axis=0).astype(np.float32)
    if (rows < d).any() or (cols < d).any():
        t *= (r[None, :, None] < rows[:, None, None]) & (r[None, None, :] < cols[:, None, None])
    return t


def _side_by_side(m: _Machine, sel: np.ndarray, base, rows, cols, transposed: bool) -> np.ndarray:
    """The tiles of computes `sel` ([products, k] compute indices, -1: none) as float32, each
    product's k tiles side by side ([products, DIM, k*DIM]: A operands) or stacked ([products,
    k*DIM, DIM]: B operands, `transposed`), zero beyond each tile's rows and columns."""
    d = m.cfg.DIM
    r = np.arange(d)
    ok = sel >= 0
    s = np.where(ok, sel, 0)
    b, nr, nc = base[s], np.where(ok, rows[s], 0), cols[s]
    if transposed:  # [products, k, rows, cols]
        t = np.take(m.sp, np.minimum(b[:, :, None] + r, m.cfg.sp_rows - 1), axis=0).astype(np.float32)
        if not ok.all() or (nr < d).any() or (nc < d).any():
            t *= (r[None, None, :, None] < nr[:, :, None, None]) & (r[None, None, None, :] < nc[:, :, None, None])
        return t.reshape(len(sel), -1, d)
    # np.take: a row gather ten times faster than fancy indexing
    t = np.take(m.sp, np.minimum(b[:, None, :] + r[None, :, None], m.cfg.sp_rows - 1), axis=0).astype(np.float32)
    if not ok.all() or (nr < d).any() or (nc < d).any():  # [products, rows, k, cols]
        t *= (r[None, :, None, None] < nr[:, None, :, None]) & (r[None, None, None, :] < nc[:, None, :, None])
    return t.reshape(len(sel), d, -1)


def _ex_grouped(m: _Machine, mode: int, flip, chain, max_products: int, A, X, BD, CW):
    """A batch of pairs whose results all go to whole accumulator blocks, with no D operand:
    each C block's final value is its old value (unless some write overwrote it) plus the
    products of every compute whose result reaches it after the last overwrite, summed as one
    product of the concatenated A tiles and weights per block (float32, exact: at most 1023
    int8 products per sum, longer sums in segments added in float64). The per-pair results
    are never formed. Returns the array state after the batch, False if a check fails (the
    per-command path then refuses), None if the batch is not of this kind."""
    d = m.cfg.DIM
    a, a_r, a_c = A
    x, x_r, x_c, x_g = X
    bd, bd_r, bd_c, bd_g = BD
    c_g, c_row, c_r, c_c, accumulate = CW
    n = len(a)
    keep = ~c_g
    if not keep.any():
        return None
    if mode == WS and not x_g.all():
        return None  # a D operand
    if mode == OS and (not flip[0] or not bd_g[flip].all() or x_g.any()):
        return None  # a chain from before the batch, a D start, or a GARBAGE B
    lead = m.sp_lead
    if not _rows_written(lead, a, a_r, a_c, d):
        return False
    installs = np.flatnonzero(flip & ~bd_g)
    if mode == WS and not _rows_written(lead, bd[installs], bd_r[installs], bd_c[installs], d):
        return False
    if mode == OS and not _rows_written(lead, x, x_r, x_c, d):
        return False
    # The write each compute's product reaches: its own in WS, its chain's last pair in OS.
    if mode == WS:
        dest = np.where(keep, np.arange(n), -1)
    else:
        last = np.r_[np.flatnonzero(flip)[1:] - 1, n - 1][chain - 1]
        dest = np.where(keep[last], last, -1)
    # C blocks by start row: one shape per row, no overlaps (as _write_blocks).
    blocks = _block_groups(np.flatnonzero(keep), c_row, c_r, c_c, accumulate)
    if blocks is None:
        return None
    order, rs, hr, hc, starts, ends, group, fs, last_over, has_over = blocks
    pos = np.arange(len(rs))
    active = pos >= np.where(has_over, last_over, starts)[group]
    r = np.arange(d)
    g_rows = rs[starts][:, None] + r[None, :]
    mask = (r[None, :, None] < hr[starts][:, None, None]) & (r[None, None, :] < hc[starts][:, None, None])
    where = np.where(mask.any(2), g_rows, 0)
    if (fs[starts][:, None, None] & ~(m.acc_set[where] | ~mask)).any():
        return False  # accumulates onto an element nothing wrote
    write_group = np.full(n, -1, np.int64)
    write_group[order] = np.where(active, group, -1)
    to = np.where(dest >= 0, write_group[np.maximum(dest, 0)], -1)
    ci = np.flatnonzero(to >= 0)
    gi = to[ci]
    o = np.argsort(gi, kind="stable")
    ci, gi = ci[o], gi[o]
    n_groups = len(starts)
    counts = np.bincount(gi, minlength=n_groups)
    seg = max(1, 1023 // max(1, max_products))
    kmax = int(counts.max()) if len(counts) else 0
    n_seg = max(1, -(-kmax // seg))
    k = max(1, -(-kmax // n_seg))
    if n_groups * n_seg * k > 2 * n + 4096:
        return None  # uneven sums: padding them would cost more than the general path
    rank = np.arange(len(ci)) - np.r_[0, np.cumsum(counts)][gi]
    sel = np.full((n_groups, n_seg * k), -1, np.int64)
    sel[gi, rank] = ci
    sel = sel.reshape(-1, k)
    lhs = _side_by_side(m, sel, a, a_r, a_c, False)
    if mode == WS:
        weights = np.concatenate([m.pe[None].astype(np.float32),
                                  _gather32(m, bd[flip], np.where(bd_g[flip], 0, bd_r[flip]), bd_c[flip]),
                                  np.zeros((1, d, d), np.float32)])
        rhs = weights[np.where(sel >= 0, chain[np.maximum(sel, 0)], len(weights) - 1)].reshape(len(sel), -1, d)
    else:
        rhs = _side_by_side(m, sel, x, x_r, x_c, True)
    sums = np.matmul(lhs, rhs).reshape(n_groups, n_seg, d, d)
    sums = np.rint(sums[:, 0] if n_seg == 1 else sums.sum(1, dtype=np.float64)).astype(np.int64)
    old = m.acc[where].astype(np.int64)
    final = wrap_int32(np.where(has_over[:, None, None], sums, old + sums))
    rr = np.broadcast_to(where[:, :, None], mask.shape)[mask]
    cc = np.broadcast_to(r[None, None, :], mask.shape)[mask]
    m.acc[rr, cc] = final[mask]
    m.acc_set[rr, cc] = True
    if mode == WS:
        return weights[-2].astype(np.int64) if flip.any() else m.pe
    # OS: the array holds the last chain's running sum.
    lc = np.arange(np.flatnonzero(flip)[-1], n)
    run = np.matmul(_gather32(m, a[lc], a_r[lc], a_c[lc]), _gather32(m, x[lc], x_r[lc], x_c[lc]))
    return wrap_int32(np.rint(run.sum(0, dtype=np.float64)).astype(np.int64))


def _write_acc(m: _Machine, out: np.ndarray, c_g, c_row, c_r, c_c, accumulate) -> bool:
    """Every pair's C block into the accumulator in program order: for each element the last
    overwrite in the batch (or the old value) plus every accumulation after it."""
    d = m.cfg.DIM
    keep = ~c_g
    if not keep.any():
        return True
    out, c_row, c_r, c_c, accumulate = out[keep], c_row[keep], c_r[keep], c_c[keep], accumulate[keep]
    done = _write_blocks(m, out, c_row, c_r, c_c, accumulate)
    if done is not None:
        return done
    r = np.arange(d)
    mask = (r[None, :, None] < c_r[:, None, None]) & (r[None, None, :] < c_c[:, None, None])
    target = ((c_row[:, None, None] + r[None, :, None]) * d + r[None, None, :])
    target = np.broadcast_to(target, mask.shape)[mask]
    value = out[mask]
    acc_flag = np.broadcast_to(accumulate[:, None, None], mask.shape)[mask]
    order = np.argsort(target, kind="stable")
    ts, vs, fs = target[order], value[order], acc_flag[order]
    head = np.r_[True, ts[1:] != ts[:-1]]
    starts = np.flatnonzero(head)
    ends = np.r_[starts[1:], len(ts)] - 1
    acc_flat, set_flat = m.acc.reshape(-1), m.acc_set.reshape(-1)
    if (fs[starts] & ~set_flat[ts[starts]]).any():
        return False  # accumulates onto an element nothing wrote
    pos = np.arange(len(ts))
    last_over = np.maximum.accumulate(np.where(fs, -1, pos))
    reset = last_over[ends]
    has_over = reset >= starts
    csum = np.r_[0, np.cumsum(vs)]
    from_reset = csum[ends + 1] - csum[np.where(has_over, reset, starts)]
    old = acc_flat[ts[starts]].astype(np.int64)
    final = np.where(has_over, from_reset, old + from_reset)
    acc_flat[ts[starts]] = wrap_int32(final)
    set_flat[ts[starts]] = True
    return True


def _block_groups(writes, c_row, c_r, c_c, accumulate):
    """The C-block writes `writes` grouped by start row (stable): (order, rows, heights, widths,
    group starts, group ends, group of each, accumulate flags, each group's last overwrite,
    whether it has one); None unless every block of a row has one shape and rows do not overlap."""
    order = writes[np.argsort(c_row[writes], kind="stable")]
    rs, hr, hc = c_row[order], c_r[order], c_c[order]
    head = np.r_[True, rs[1:] != rs[:-1]]
    starts = np.flatnonzero(head)
    ends = np.r_[starts[1:], len(rs)] - 1
    group = np.cumsum(head) - 1
    if (hr != hr[starts][group]).any() or (hc != hc[starts][group]).any():
        return None
    if (rs[starts][:-1] + hr[starts][:-1] > rs[starts][1:]).any():
        return None
    fs = accumulate[order]
    last_over = np.maximum.accumulate(np.where(fs, -1, np.arange(len(rs))))[ends]
    return order, rs, hr, hc, starts, ends, group, fs, last_over, last_over >= starts


def _write_blocks(m: _Machine, out, c_row, c_r, c_c, accumulate) -> bool | None:
    """The common case of `_write_acc` at block granularity: every C block that starts on one
    accumulator row has the same shape, and blocks starting on different rows do not overlap.
    Then each block is combined with the blocks on the same row alone. None: not this case."""
    d = m.cfg.DIM
    blocks = _block_groups(np.arange(len(c_row)), c_row, c_r, c_c, accumulate)
    if blocks is None:
        return None
    order, rs, hr, hc, starts, ends, group, fs, last_over, has_over = blocks
    csum = np.concatenate([np.zeros((1, d, d), np.int64), np.cumsum(out[order], axis=0)])
    from_reset = csum[ends + 1] - csum[np.where(has_over, last_over, starts)]
    r = np.arange(d)
    rows_of = rs[starts][:, None] + r[None, :]                       # [groups, d]
    mask = (r[None, :, None] < hr[starts][:, None, None]) & (r[None, None, :] < hc[starts][:, None, None])
    where = np.where(mask.any(2), rows_of, 0)
    old_set = m.acc_set[where] | ~mask
    if (fs[starts][:, None, None] & ~old_set).any():
        return False  # accumulates onto an element nothing wrote
    old = m.acc[where].astype(np.int64)
    final = wrap_int32(np.where(has_over[:, None, None], from_reset, old + from_reset))
    rr = np.broadcast_to(where[:, :, None], mask.shape)[mask]
    cc = np.broadcast_to(r[None, None, :], mask.shape)[mask]
    m.acc[rr, cc] = final[mask]
    m.acc_set[rr, cc] = True
    return True


# ---------------------------------------------------------------- mvin and mvout

def _mvin_batch(m: _Machine, en: Entries, lo: int, hi: int) -> bool:
    """mvins into the scratchpad, moved a DRAM row at a time: the rows of one width gathered
    through a sliding window over the image, each DIM-column block stored as whole rows. Two
    mvins of the batch writing one scratchpad row would need program order: per command."""
    cfg, d = m.cfg, m.cfg.DIM
    addr, rows, cols = matrix_fields(en.rs2[lo:hi])
    dram_addr = en.rs1[lo:hi].astype(np.int64)
    slot = _SLOT[en.funct[lo:hi].astype(np.int64)]
    if not _plain(addr).all() or (en.rs1[lo:hi] == 0).any() or (en.rs1[lo:hi] >= 1 << 62).any():
        return False  # accumulator destinations and zero-fills take the per-command path
    used = np.flatnonzero(np.bincount(slot, minlength=3)).tolist()
    if any(m.ld[k] is None for k in used):
        return False
    stride = np.array([m.ld[k].stride if m.ld[k] else 0 for k in range(3)], np.int64)[slot]
    block = np.array([m.ld[k].block_stride if m.ld[k] else 0 for k in range(3)], np.int64)[slot]
    scale = np.array([m.ld[k].scale if m.ld[k] else 1.0 for k in range(3)], np.float32)[slot]
    if (stride >= 1 << 40).any() or rows.min() < 1 or rows.max() > d or cols.min() < 1:
        return False
    if cols.max() * cfg.elem_bytes > cfg.MAX_BYTES or (block < rows).any():
        return False
    n_blocks = -(-cols // d)
    if (addr + rows - 1 + (n_blocks - 1) * block >= cfg.sp_rows).any():
        return False
    first = dram_addr - m.base
    last = first + (rows - 1) * stride + cols * cfg.elem_bytes
    if (first < 0).any() or (last > len(m.dram)).any():
        return False
    i, r = np.nonzero(np.arange(d)[None, :] < rows[:, None])  # every (mvin, row) moved
    dest = [addr[i] + r + b * block[i] for b in range(int(n_blocks.max()))]
    hits = np.concatenate([t[n_blocks[i] > b] for b, t in enumerate(dest)])
    if np.bincount(hits, minlength=cfg.sp_rows).max() > 1:
        return False
    start = first[i] + r * stride[i]
    moves = []
    for width in np.flatnonzero(np.bincount(cols[i])).tolist():
        sel = cols[i] == width
        at = start[sel]
        if _windows(m.dram_written, width)[at].any():
            return False
        moves.append((width, sel, at, _windows(m.dram, width)[at]))
    for width, sel, at, raw in moves:
        _windows(m.dram_read, width, True)[at] = True
        sc = scale[i[sel]]
        if (sc == 1.0).all():
            values = raw.view(np.int8)
        else:
            y = raw.view(np.int8).astype(np.float32) * sc[:, None]
            values = np.clip(np.rint(y), cfg.elem_min, cfg.elem_max).astype(np.int8)
        whole = width // d  # blocks that fill their scratchpad rows: stored as whole rows
        if whole:
            row = np.dtype((np.void, d))
            to = np.stack([dest[b][sel] for b in range(whole)], axis=1).reshape(-1)
            m.sp.view(row).reshape(-1)[to] = np.ascontiguousarray(values[:, :whole * d]).view(row).reshape(-1)
            m.sp_set.view(row).reshape(-1)[to] = np.ones(d, bool).view(row)[0]
            m.sp_lead[to] = d
        if width % d:
            to = dest[whole][sel]
            m.sp[to, :width % d] = values[:, whole * d:]
            m.sp_set[to, :width % d] = True
            m.lead_rows(to, distinct=True)
        m.tally.load_bytes += int(at.size) * width * cfg.elem_bytes
    return True


def _windows(a: np.ndarray, width: int, writeable: bool = False) -> np.ndarray:
    """Every run of `width` consecutive elements of a flat array, as rows of a view."""
    return np.lib.stride_tricks.as_strided(a, (len(a) - width + 1, width), (a.strides[0],) * 2,
                                           writeable=writeable)


def _mvout_batch(m: _Machine, en: Entries, lo: int, hi: int) -> bool:
    cfg, d, st = m.cfg, m.cfg.DIM, m.st
    if st is None:
        return False
    addr, rows, cols = matrix_fields(en.rs2[lo:hi])
    if (addr == GARBAGE).any() or (en.rs1[lo:hi] >= 1 << 62).any():
        return False
    acc = (addr >> 31) & 1 == 1
    full = (addr >> 29) & 1 == 1
    if ((addr >> 26) & 0b10111 != 0).any() or (full & ~acc).any():
        return False  # accumulate or normalisation bits: the per-command path names them
    if not ((acc == acc[0]).all() and (full == full[0]).all()):
        return False
    acc, full = bool(acc[0]), bool(full[0])
    esz = cfg.acc_bytes if full else cfg.elem_bytes
    limit = cfg.max_cols_full_mvout if full else cfg.max_cols_elem
    if rows.min() < 1 or rows.max() > d or cols.min() < 1 or cols.max() > limit:
        return False
    if ((rows > 1) & (st.stride < cols * esz)).any():
        return False
    if acc and not full and st.act == RELU and st.scale < 0:
        return False
    base_row = addr & ((1 << ROW_BITS) - 1)
    width = int(cols.max())
    i = np.arange(d)[None, :, None]
    j = np.arange(width)[None, None, :]
    mask = (i < rows[:, None, None]) & (j < cols[:, None, None])
    local = base_row[:, None, None] + (j // d) * d + i
    limit_rows = cfg.acc_rows if acc else cfg.sp_rows
    if (mask & (local >= limit_rows)).any():
        return False
    local, col = local[mask], np.broadcast_to(j % d, mask.shape)[mask]
    memory, written = (m.acc, m.acc_set) if acc else (m.sp, m.sp_set)
    if not written[local, col].all():
        return False
    first = en.rs1[lo:hi].astype(np.int64) - m.base
    last = first + (rows - 1) * st.stride + cols * esz
    if (first < 0).any() or (last > len(m.dram)).any():
        return False
    start = (first[:, None, None] + i * st.stride + j * esz)[mask]
    idx = (start[:, None] + np.arange(esz)[None, :]).reshape(-1)
    if m.dram_read[idx].any() or _rows_overlap(first, rows, st.stride, cols * esz):
        return False  # ordering against mvins, or two mvouts of one batch on one byte
    if not acc:
        out = memory[local, col].view(np.uint8)
    elif full:
        out = memory[local, col].astype("<i4").view(np.uint8)
    else:
        y = scale_round_saturate(memory[local, col], st.scale, cfg.elem_min, cfg.elem_max)
        if st.act == RELU:
            y = np.maximum(y, 0)
        out = y.astype(np.int8).view(np.uint8)
    m.dram[idx] = out.reshape(-1)
    m.dram_written[idx] = True
    m.tally.store_bytes += int(idx.size)
    return True


def _rows_overlap(first: np.ndarray, rows: np.ndarray, stride: int, row_bytes: np.ndarray) -> bool:
    """Whether DRAM rows of different moves share a byte (rows of one move never do: their
    stride is at least their length)."""
    i, r = np.nonzero(np.arange(int(rows.max()))[None, :] < rows[:, None])
    start = first[i] + r * stride
    order = np.argsort(start, kind="stable")
    s, length = start[order], row_bytes[i][order]
    return bool((s[1:] < s[:-1] + length[:-1]).any())


_BATCH = {MVIN: _mvin_batch, MVOUT: _mvout_batch, EX: _ex_batch}

__all__ = ["OS", "WS", "ProgramError", "run_entries", "run_pieces"]
