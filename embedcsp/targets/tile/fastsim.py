"""timing.simulate over a record array: the same cycle model (docs/tile.md section 8), with the
costs computed in bulk and the schedule in a loop over plain integers, so programs of
hundreds of thousands of records are ranked in a fraction of a second. The tests check it
against timing.simulate record for record."""

from __future__ import annotations

import numpy as np

from embedcsp.errors import ProgramError
from embedcsp.targets.tile.config import TileConfig
from embedcsp.targets.tile.records import queues
from embedcsp.targets.tile.timing import DMA_RUN, ISSUE, Timing, _shape_cost


def record_costs(records: np.ndarray, cfg: TileConfig) -> np.ndarray:
    """Cycles each record occupies its queue (timing.cost), int64."""
    q = queues(records)
    cost = np.full(len(records), cfg.ii, np.int64)
    moves = np.flatnonzero(q != 1)
    if not len(moves):
        return cost
    rank = records["rank"][moves].astype(np.int64)
    esz = np.where(q[moves] == 0, 0, np.where(records["flags"][moves] == 2, 4, 1)).astype(np.int64)
    loads = q[moves] == 0
    if loads.any():
        names = cfg.operand_names
        sizes = np.array([cfg.dtype(n).bytes for n in names], np.int64)
        esz[loads] = sizes[records["operand"][moves][loads]]
    key = np.concatenate([rank[:, None], esz[:, None], records["strides"][moves].astype(np.int64),
                          records["valid"][moves].astype(np.int64)], 1)
    shapes, inverse = np.unique(key, axis=0, return_inverse=True)
    per = np.empty(len(shapes), np.int64)
    for i, row in enumerate(shapes.tolist()):
        r, e = row[0], row[1]
        nbytes, runs = _shape_cost(tuple(row[2:2 + r]), tuple(row[6:6 + r]), e)
        per[i] = ISSUE + DMA_RUN * runs + -(-nbytes // cfg.bytes_per_cycle)
    cost[moves] = per[inverse.reshape(-1)]
    return cost


def simulate_records(records: np.ndarray, cfg: TileConfig) -> Timing:
    """timing.simulate(to_insns(records), cfg), computed on the arrays."""
    q = queues(records)
    cost = record_costs(records, cfg)
    after = records["after"].astype(np.int64)
    per_queue = [np.flatnonzero(q == k) for k in range(3)]
    sizes = [len(p) for p in per_queue]
    for k in range(3):
        w = after[per_queue[k]]
        if len(w) and any(int(w[:, j].max()) > sizes[j] for j in range(3) if j != k):
            raise ProgramError("the timing model found a wait that can never be met; run the "
                               "functional model for the instruction")
    waits = [after[p].tolist() for p in per_queue]
    costs = [cost[p].tolist() for p in per_queue]
    ends: list[list[int]] = [[], [], []]
    free = [0, 0, 0]
    busy = [0, 0, 0]
    dma_free = 0
    done = [0, 0, 0]
    left = sum(sizes)
    while left:
        best_start, best_q = -1, -1
        for k in (0, 1, 2):
            i = done[k]
            if i == sizes[k]:
                continue
            w = waits[k][i]
            start = free[k]
            ok = True
            for j in (0, 1, 2):
                if j != k and w[j]:
                    if done[j] < w[j]:
                        ok = False
                        break
                    e = ends[j][w[j] - 1]
                    if e > start:
                        start = e
            if not ok:
                continue
            if k != 1 and dma_free > start:
                start = dma_free
            if best_q < 0 or start < best_start:
                best_start, best_q = start, k
        if best_q < 0:
            raise ProgramError("the timing model found the program deadlocked; run the functional "
                               "model for the instruction")
        k = best_q
        c = costs[k][done[k]]
        end = best_start + c
        ends[k].append(end)
        free[k] = end
        busy[k] += c
        if k != 1:
            dma_free = end
        done[k] += 1
        left -= 1
    return Timing(max(free), tuple(busy), cfg.ii * sizes[1])
