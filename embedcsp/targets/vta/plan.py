"""Plan: tile the embedded operator so every buffer fits, and pick the loop order.

The embedding reduces the operator to a blocked matrix product over three axes
(rows, cols, red) counted in hardware elements. A plan cuts each axis into
tiles, orders the tile loops (rows or cols outermost, red innermost so partial
sums stay in ACC), and gives each scratchpad one or two slots (two lets the
next tile load while the current one computes). Among all tilings that fit,
it keeps the one with the fewest estimated cycles.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from embedcsp.embedding import Embedding
from embedcsp.errors import BadInput, NoEmbedding
from embedcsp.operator import MAX_DRAM_BYTES
from embedcsp.targets.tiling import candidate_extents as shared_extents
from embedcsp.targets.vta.config import (
    LOOP_ITER_BITS,
    MEM_ACC,
    MEM_INP,
    MEM_UOP,
    MEM_WGT,
    MEMOP_STRIDE_BITS,
    VtaConfig,
)
from embedcsp.targets.vta.hazard import gemm_hazard

# Estimate constants; the cycle model proper is embedcsp.targets.vta.timing, which the
# pipeline uses to re-rank the best few plans.
BUS_BYTES = 8  # pynq's 64-bit AXI
INSN_OVERHEAD = 10  # pipeline fill and issue of one instruction, cycles
ROW_OVERHEAD = 2  # DMA cycles per row of a 2-D transfer
# A tile extent becomes a GEMM/ALU loop count (14-bit iter_out/iter_in, docs/vta.md), so no
# tile axis may exceed it, however deep the buffers of a variant are.
MAX_LOOP = (1 << LOOP_ITER_BITS) - 1


@dataclass(frozen=True)
class Tiling:
    rows: int  # tile extents in hardware elements
    cols: int
    reds: int
    outer: str  # "row" or "col": which tile loop is outermost
    inp_slots: int
    wgt_slots: int
    acc_slots: int
    # The direct conv form (embedcsp.targets.vta.direct) tiles output pixels, not matrix rows:
    # then rows = output rows per tile, width = output columns per tile and
    # reds = channel blocks (each with every filter tap). 0 in the matrix form.
    width: int = 0


@dataclass(frozen=True)
class Plan:
    embedding: Embedding
    n_rows: int  # matrix extents in hardware elements
    n_cols: int
    n_reds: int
    tiling: Tiling
    estimated_cycles: int
    dram_load_bytes: int
    tiles: tuple[int, int, int]  # row, col and red tiles
    # Independent products along the batch axis (a dim in all three tensors, which VTA has no
    # lane for): the tile loops run once per batch element, over its own slice of each region.
    n_bats: int = 1

    @property
    def steps(self) -> int:
        nr, nc, nl = self.tiles
        return nr * nc * nl * self.n_bats


def _edges(n: int, tile: int) -> set[int]:
    return {tile if n >= tile else n, n - (-(-n // tile) - 1) * tile}


def _hazard_free(n_rows: int, n_cols: int, n_reds: int, tr: int, tc: int, tl: int) -> bool:
    """Every tile shape the plan will emit keeps the GEMM loop free of ACC hazards."""
    for rows, cols, reds in product(_edges(n_rows, tr), _edges(n_cols, tc), _edges(n_reds, tl)):
        if gemm_hazard(np.arange(cols), reds, rows, 0, cols):
            return False
    return True


def candidate_extents(n: int, cap: int) -> list[int]:
    """Tile extents worth trying (targets/tiling.py), also within MAX_LOOP."""
    return shared_extents(n, min(cap, MAX_LOOP))


def uop_budget(tiling: Tiling) -> int:
    """Micro-ops of every kernel the code generator may need for this tiling."""
    gemm = tiling.acc_slots * tiling.inp_slots * tiling.wgt_slots * 4 * tiling.cols
    return gemm + 2 * tiling.acc_slots


def estimate(cfg: VtaConfig, n_rows: int, n_cols: int, n_reds: int, t: Tiling,
             bus_bytes: int = BUS_BYTES) -> tuple[int, int]:
    """(cycles, DRAM bytes loaded) under a simple overlap model."""
    nr, nc, nl = -(-n_rows // t.rows), -(-n_cols // t.cols), -(-n_reds // t.reds)
    inp_total = n_rows * n_reds * cfg.inp_elem_bytes
    wgt_total = n_cols * n_reds * cfg.wgt_elem_bytes
    if t.outer == "row":
        inp_bytes = inp_total * (1 if nl == 1 else nc)
        wgt_bytes = wgt_total * (1 if nc == 1 and nl == 1 else nr)
        inp_rows = n_rows * (1 if nl == 1 else nc) * nl
        wgt_rows = n_cols * nl * (1 if nc == 1 and nl == 1 else nr)
    else:
        wgt_bytes = wgt_total * (1 if nl == 1 else nr)
        inp_bytes = inp_total * (1 if nr == 1 and nl == 1 else nc)
        wgt_rows = n_cols * (1 if nl == 1 else nr) * nl
        inp_rows = n_rows * nl * (1 if nr == 1 and nl == 1 else nc)
    steps = nr * nc * nl
    compute = n_rows * n_cols * n_reds + nr * nc * (t.rows * t.cols + INSN_OVERHEAD) + steps * INSN_OVERHEAD
    load = (inp_bytes + wgt_bytes) // bus_bytes + (inp_rows + wgt_rows) * ROW_OVERHEAD + steps * INSN_OVERHEAD
    store = n_rows * n_cols * cfg.out_elem_bytes // bus_bytes + n_rows * ROW_OVERHEAD * nc
    return overlap_cycles(compute, load, store, t), int(inp_bytes + wgt_bytes)


def overlap_cycles(compute: int, load: int, store: int, t: Tiling) -> int:
    """Module times combined: overlapped when the scratchpads are double-buffered, else serial."""
    if t.inp_slots > 1 and t.wgt_slots > 1:
        cycles = max(compute, load, store if t.acc_slots > 1 else 0) + (0 if t.acc_slots > 1 else store)
    else:
        cycles = compute + load + store
    return int(cycles)


def candidate_plans(emb: Embedding, double_buffer: bool = True, bus_bytes: int = BUS_BYTES,
                    count: int = 1) -> list[Plan]:
    """The `count` fastest hazard-free tilings by the estimate, fastest first."""
    cfg = emb.accelerator.config
    n_rows, n_cols, n_reds = (emb.axis_length(r) for r in ("row", "col", "red"))
    n_bats = emb.axis_length("bat") if "bat" in emb.classes else 1
    image = n_bats * (n_rows * n_reds * cfg.inp_elem_bytes + n_cols * n_reds * cfg.wgt_elem_bytes
                      + n_rows * n_cols * cfg.out_elem_bytes)
    if image > MAX_DRAM_BYTES:
        raise BadInput(
            f"{emb.operator.describe()} needs a {image / 2**30:.1f} GiB DRAM image in accelerator "
            f"layout; embedcsp builds and checks images up to {MAX_DRAM_BYTES >> 30} GiB"
        )
    limit = (1 << MEMOP_STRIDE_BITS) - 1
    for name, n in (("reduction", n_reds), ("output", n_cols)):
        if n > limit:
            raise NoEmbedding(
                f"the {name} axis has {n} hardware elements, more than a LOAD/STORE row pitch "
                f"can skip ({limit}); this operator is too large for one VTA program"
            )
    d_inp, d_wgt, d_acc, d_uop = (cfg.depth(m) for m in (MEM_INP, MEM_WGT, MEM_ACC, MEM_UOP))
    scored = []
    for slots in ((2, 1) if double_buffer else (1,)):
        for tl in candidate_extents(n_reds, d_wgt // slots):
            for tc in candidate_extents(n_cols, d_wgt // (slots * tl)):
                for tr in candidate_extents(n_rows, min(d_inp // (slots * tl), d_acc // (slots * tc))):
                    for outer in ("row", "col"):
                        t = Tiling(tr, tc, tl, outer, slots, slots, slots)
                        if uop_budget(t) <= d_uop:
                            cycles, load = estimate(cfg, n_rows, n_cols, n_reds, t, bus_bytes)
                            scored.append(((cycles * n_bats, load * n_bats, -tr * tc * tl, outer, slots), t))
    scored.sort(key=lambda item: item[0])
    plans = []
    for (cycles, load, *_), t in scored:
        if _hazard_free(n_rows, n_cols, n_reds, t.rows, t.cols, t.reds):
            tiles = (-(-n_rows // t.rows), -(-n_cols // t.cols), -(-n_reds // t.reds))
            plans.append(Plan(emb, n_rows, n_cols, n_reds, t, cycles, load, tiles, n_bats))
            if len(plans) == count:
                break
    if not plans:
        raise NoEmbedding("no tiling fits this VTA's buffers; the configuration is too small")
    return plans


def make_plan(emb: Embedding, double_buffer: bool = True, bus_bytes: int = BUS_BYTES) -> Plan:
    """The fastest tiling (by the estimate) that fits every buffer."""
    return candidate_plans(emb, double_buffer, bus_bytes, 1)[0]
