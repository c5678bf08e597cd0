"""Tiling of the embedded blocked matrix product into Gemmini's scratchpad and accumulator.

The embedding reduces the operator to a blocked product C = A.B over three
axes counted in *chunks*: rows (A and C rows, DIM lanes each), cols (B and C
columns, DIM lanes) and reds (the reduction, red_lanes each). A chunk may hold
fewer real lanes than its width (the last chunk of a lane group); `Axis` says
how many, and where each chunk's lanes sit in the packed DRAM matrices, which
hold real lanes only (no padding in DRAM, as Gemmini's own library: partial
tiles are handled by the row and column counts of each command).

A plan cuts every axis into tiles of `rows x cols x reds` chunks, orders the
tile loops (rows or cols outermost, the reduction innermost so partial sums
stay in the accumulator), gives the scratchpad and the accumulator one or two
slots (two let the next tile load while this one computes), and picks the
dataflow: weight-stationary (a B tile preloaded once, streamed against every
A tile of the tile's rows) or output-stationary (chains of computes summing in
the array, at most 31 products per output: the RTL's 20-bit partial sums).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from embedcsp.embedding import Embedding
from embedcsp.errors import BadInput, NoEmbedding
from embedcsp.operator import MAX_DRAM_BYTES
from embedcsp.targets.gemmini.config import MAX_ARRAY_PRODUCTS, GemminiConfig
from embedcsp.targets.tiling import candidate_extents

WS, OS = "ws", "os"


@dataclass(frozen=True, eq=False)
class Axis:
    """One matrix axis in chunks: real lanes of every chunk and their first packed index."""

    role: str
    lanes: int
    valid: np.ndarray   # int64 [n]: real lanes of chunk x (1..lanes)
    offset: np.ndarray  # int64 [n]: packed index of chunk x's first lane

    @property
    def n(self) -> int:
        return len(self.valid)

    @cached_property
    def total(self) -> int:
        """Real lanes along the axis: the packed matrix's extent."""
        return int(self.valid.sum())

    @cached_property
    def chunk_of(self) -> np.ndarray:
        """Chunk index of every packed position (inverse of offset/valid)."""
        return np.repeat(np.arange(self.n), self.valid)

    @cached_property
    def lane_of(self) -> np.ndarray:
        """Lane index inside its chunk of every packed position."""
        return np.arange(self.total) - self.offset[self.chunk_of]


def axis_of(emb: Embedding, role: str, lanes: int) -> Axis:
    """The chunks of a matrix axis: index = (loops..., chunk), chunk real lanes as the lane group
    decodes them (the last chunk of a group may be partial)."""
    group = emb.group(role)
    n = emb.axis_length(role)
    chunk = np.arange(n) % group.chunks
    valid = np.minimum(lanes, group.fused - chunk * group.lanes).astype(np.int64)
    assert group.lanes == lanes and valid.min() >= 1
    offset = np.concatenate([[0], np.cumsum(valid)[:-1]]).astype(np.int64)
    return Axis(role, lanes, valid, offset)


@dataclass(frozen=True)
class Tiling:
    rows: int       # chunks per tile along each axis
    cols: int
    reds: int
    outer: str      # "row" or "col": the outermost tile loop
    slots: int      # 1 or 2: scratchpad and accumulator slots
    dataflow: str   # "ws" or "os"
    chain: int = 1  # OS: pairs summed in the array before C is written


@dataclass(frozen=True, eq=False)
class Plan:
    embedding: Embedding
    config: GemminiConfig
    rows: Axis
    cols: Axis
    reds: Axis
    tiling: Tiling
    out_bytes: int          # 1 (int8 epilogues) or 4 (int32)
    estimated_cycles: int = 0
    # Independent products along the batch axis (a dim in all three tensors): the tile loops
    # run once per batch element, over its own matrices in each region.
    n_bats: int = 1

    @property
    def tiles(self) -> tuple[int, int, int]:
        t = self.tiling
        return (-(-self.rows.n // t.rows), -(-self.cols.n // t.cols), -(-self.reds.n // t.reds))

    @property
    def steps(self) -> int:
        return math.prod(self.tiles) * self.n_bats

    # ---- local memory map (rows): A slots, then B slots, in the scratchpad
    @property
    def a_rows(self) -> int:
        t = self.tiling
        return t.rows * t.reds * self.config.DIM

    @property
    def b_rows(self) -> int:
        t = self.tiling
        return t.reds * t.cols * self.config.DIM

    @property
    def c_rows(self) -> int:
        t = self.tiling
        return t.rows * t.cols * self.config.DIM

    def a_base(self, slot: int) -> int:
        return slot * self.a_rows

    def b_base(self, slot: int) -> int:
        return self.tiling.slots * self.a_rows + slot * self.b_rows

    def c_base(self, slot: int) -> int:
        return slot * self.c_rows

    def describe(self) -> str:
        t = self.tiling
        flow = "weight-stationary" if t.dataflow == WS else f"output-stationary (chains of {t.chain})"
        batches = f"{self.n_bats} batches of " if self.n_bats > 1 else ""
        return (f"{batches}{self.rows.n}x{self.cols.n}x{self.reds.n} chunks in tiles of {t.rows}x{t.cols}x{t.reds}, "
                f"{t.outer}s outermost, {flow}, {'double' if t.slots > 1 else 'single'}-buffered")


def os_chain(cfg: GemminiConfig) -> int:
    """Computes an OS chain may sum in the array: at most 31 int8 products per output."""
    return max(1, MAX_ARRAY_PRODUCTS // cfg.red_lanes)


def fits(cfg: GemminiConfig, rows: int, cols: int, reds: int, slots: int) -> bool:
    d = cfg.DIM
    return (slots * (rows * reds + reds * cols) * d <= cfg.sp_rows
            and slots * rows * cols * d <= cfg.acc_rows)




def axes(emb: Embedding) -> tuple[Axis, Axis, Axis]:
    cfg = emb.accelerator.config
    return (axis_of(emb, "row", cfg.DIM), axis_of(emb, "col", cfg.DIM),
            axis_of(emb, "red", cfg.red_lanes))


def tilings(emb: Embedding, out_bytes: int, double_buffer: bool = True,
            dataflows: tuple[str, ...] = (WS, OS)) -> list[Plan]:
    """Every tiling worth costing (the cycle model ranks them, build.py)."""
    cfg = emb.accelerator.config
    if out_bytes == 4 and cfg.DIM > cfg.max_cols_full_mvout:
        raise NoEmbedding(f"an int32 read-out moves at most {cfg.max_cols_full_mvout} columns and one "
                          f"block per mvout, narrower than a DIM = {cfg.DIM} accumulator row")
    rows, cols, reds = axes(emb)
    n_bats = emb.axis_length("bat") if "bat" in emb.classes else 1
    image = n_bats * (rows.total * reds.total + reds.total * cols.total + rows.total * cols.total * out_bytes)
    if image > MAX_DRAM_BYTES:
        raise BadInput(f"{emb.operator.describe()} needs a {image / 2**30:.1f} GiB DRAM image in "
                       f"accelerator layout; embedcsp builds and checks images up to "
                       f"{MAX_DRAM_BYTES >> 30} GiB")
    d = cfg.DIM
    plans = []
    for dataflow in dataflows:
        chain = os_chain(cfg) if dataflow == OS else 1
        for slots in ((2, 1) if double_buffer else (1,)):
            cap_c = cfg.acc_rows // (slots * d)
            for tl in candidate_extents(reds.n, cfg.sp_rows // (slots * d * 2)):
                for tc in candidate_extents(cols.n, cap_c):
                    cap_r = min(cap_c // tc, (cfg.sp_rows // (slots * d) - tl * tc) // tl)
                    for tr in candidate_extents(rows.n, cap_r):
                        if not fits(cfg, tr, tc, tl, slots):
                            continue
                        for outer in ("row", "col"):
                            t = Tiling(tr, tc, tl, outer, slots, dataflow, chain)
                            plans.append(Plan(emb, cfg, rows, cols, reds, t, out_bytes, n_bats=n_bats))
    if not plans:
        raise NoEmbedding("no tiling fits this Gemmini's scratchpad and accumulator")
    return plans
