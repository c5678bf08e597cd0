"""From an embedding to Gemmini's best program: every tiling that fits, ranked by a closed-form
estimate; the best few generated and ranked by the cycle model (the family's `build`)."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np

from embedcsp.embedding import Embedding
from embedcsp.errors import BadInput
from embedcsp.reference import Epilogue
from embedcsp.targets.gemmini.codegen import Program, element_maps, generate
from embedcsp.targets.gemmini.plan import OS, WS, Axis, Plan, tilings
from embedcsp.targets.gemmini.timing import (
    BEAT_BYTES,
    WS_REUSE_MIN_ROWS,
    Board,
    board,
    cost_program,
)

EPILOGUES = ("saturate", "requant/nearest_even", "int32")
# Candidates beyond the first are generated only while programs stay this small; the largest
# GEMMs take seconds per program, and the estimate's first choice is then kept.
RERANK_MAX_COMMANDS = 1_000_000


def out_bytes_of(epilogue: Epilogue) -> int:
    if epilogue.name not in EPILOGUES:
        raise BadInput(f"Gemmini cannot apply the {epilogue.name} epilogue; it offers "
                       f"{', '.join(EPILOGUES)}")
    return 4 if epilogue.kind == "int32" else 1


@lru_cache(maxsize=16)
def _streamed_rows(rows: Axis) -> tuple[int, float]:
    """(sum, mean) over the row chunks of the rows a WS compute streams: the same for every
    tiling of one embedding, so computed once (Axis hashes by identity)."""
    per_row = np.maximum(rows.valid, WS_REUSE_MIN_ROWS)
    return int(per_row.sum()), float(per_row.mean())


def estimate(plan: Plan) -> tuple[int, int]:
    """(cycles, commands) under a closed-form overlap model: loads, computes and stores in
    cycles (reloads counted by the loop order), overlapped when double-buffered."""
    cfg, t = plan.config, plan.tiling
    nr, nc, nl = plan.tiles
    rows, cols, reds = plan.rows, plan.cols, plan.reds
    a_bytes, b_bytes = rows.total * reds.total, reds.total * cols.total
    if t.outer == "row":
        a_loads = 1 if nl == 1 else nc
        b_loads = 1 if nc == 1 and nl == 1 else nr
    else:
        b_loads = 1 if nl == 1 else nr
        a_loads = 1 if nr == 1 and nl == 1 else nc
    load = (a_bytes * a_loads + b_bytes * b_loads) // BEAT_BYTES + rows.n * reds.n * a_loads
    store = rows.total * cols.total * plan.out_bytes // BEAT_BYTES
    pairs = rows.n * cols.n * reds.n
    if t.dataflow == WS:
        flips = cols.n * reds.n * nr
        per_row_sum, per_row_mean = _streamed_rows(rows)
        streamed = per_row_sum * cols.n * reds.n  # every compute streaming its rows
        ex = streamed + int(flips * (cfg.DIM - per_row_mean))  # a new B always takes DIM
    else:
        ex = pairs * cfg.DIM
    blocks = cfg.max_block_len
    commands = (2 * pairs + rows.n * -(-reds.n // blocks) * a_loads + reds.n * -(-cols.n // blocks) * b_loads
                + rows.n * cols.n)
    body = max(load, ex, store) if t.slots > 1 else load + ex + store
    steps = nr * nc * nl
    return plan.n_bats * (max(body, load + store, commands) + steps * cfg.DIM), plan.n_bats * commands


def best_program(embedding: Embedding, epilogue: Epilogue, board_name: str, candidates: int = 4,
                 double_buffer: bool = True, dataflows: tuple[str, ...] = (WS, OS),
                 with_maps: bool = True) -> tuple[Plan, Program]:
    """The best plan and its program: the estimate's best few, generated and costed. Without
    `with_maps` the program has no element maps (enough to cost it, not to run it)."""
    b: Board = board(board_name)
    plans = tilings(embedding, out_bytes_of(epilogue), double_buffer, dataflows)
    scored = sorted(plans, key=lambda p: (estimate(p), p.tiling.dataflow != WS, -p.tiling.rows * p.tiling.cols))
    best = None
    for plan in scored[:max(1, candidates)]:
        if best is not None and estimate(plan)[1] > RERANK_MAX_COMMANDS:
            continue
        program = generate(plan, epilogue, {})
        cycles = cost_program(program, plan, b).cycles
        # Ties go to weight-stationary, the dataflow of Gemmini's own library.
        if best is None or (cycles, plan.tiling.dataflow != WS) < (best[0], best[1].tiling.dataflow != WS):
            best = (cycles, plan, program)
        if estimate(plan)[1] > RERANK_MAX_COMMANDS:
            break
    cycles, plan, program = best
    if with_maps:  # the layouts depend on the embedding alone: built once, for the program kept
        program = replace(program, element_maps=element_maps(plan))
    return replace(plan, estimated_cycles=cycles), program
