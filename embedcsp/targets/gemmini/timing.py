"""Cycle model of a Gemmini program (docs/gemmini.md, "Cycle model"; /work/shared/gemmini.md
section 9). Approximate, from RTL parameters, not measured.

Three queues run concurrently, as Gemmini's load, execute and store
controllers do, each in program order:

  load     mvin: ceil(row bytes / 16) bus beats per row (one 16-byte beat carries a row of
           16 int8; each row is its own request, up to 16 in flight, so latency overlaps)
  execute  WS compute_preloaded: DIM cycles (new weights always take DIM cycles to shift in);
           WS compute_accumulated: max(A rows, 4) cycles (only those rows stream);
           OS compute: DIM cycles (A and B both stream DIM rows); preload: no cycles of its own
  store    mvout: ceil(row bytes / 16) beats per row (an int32 row of 16 is four beats)

The only ordering between queues is through local memory, which the hardware
tracks by address: a step computes once its A and B tiles are in, a step's
mvins into a slot wait for the last compute that read the slot's previous
tiles, a tile's first compute waits for the mvout of the tile that held its
accumulator slot, its mvout for its last compute. This is costed per plan step
(the commands of one step of the tile loop), from each command's own cost.
Three floors: the queues share one 16-byte DMA port (loads + stores), the
core issues at most one RoCC command per cycle, and the last results appear
about 3*DIM cycles after their inputs plus the scratchpad, accumulator and
read-out-scale latencies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedcsp.errors import BadInput
from embedcsp.operator import Operator
from embedcsp.targets.gemmini.config import GemminiConfig
from embedcsp.targets.gemmini.decode import field

# ---- constants, with their source (/work/shared/gemmini.md)
BEAT_BYTES = 16        # section 9, section 1.1: 128-bit system-bus beats, 16 B per cycle
WS_REUSE_MIN_ROWS = 4  # section 9: a WS compute with reused weights streams max(a_rows, D_rows, 4)
ISSUE_PER_CYCLE = 1    # one RoCC command per core cycle (a RoCC instruction each; not in the doc)
SPAD_READ_DELAY = 4    # section 9: spad_read_delay
ACC_READ_DELAY = 2     # section 9: accumulator read
SCALE_DELAY = 8        # section 9: read-out scale pipeline


def drain_cycles(cfg: GemminiConfig) -> int:
    """From the last input to the last result in DRAM: the array (3*DIM, section 9) and the
    scratchpad, accumulator and read-out scale latencies."""
    return 3 * cfg.DIM + SPAD_READ_DELAY + ACC_READ_DELAY + SCALE_DELAY


@dataclass(frozen=True)
class Board:
    """The platform a cycle count is converted to seconds on: only its clock (Gemmini's DMA
    width is part of Gemmini, not of the board)."""

    name: str
    clock_mhz: float


# A nominal 1 GHz SoC clock: seconds are only the cycles at this clock.
BOARDS = {"chipyard": Board("chipyard", 1000.0)}
DEFAULT_BOARD = "chipyard"


def board(name: str) -> Board:
    """The board called `name` (the pipeline passes DEFAULT_BOARD where the user named none)."""
    try:
        return BOARDS[name]
    except KeyError:
        raise BadInput(f"unknown board {name!r} for Gemmini: expected one of {', '.join(BOARDS)}") from None


@dataclass(frozen=True)
class Timing:
    cycles: int
    busy: tuple[int, int, int]  # cycles each queue spent working (load, execute, store)
    compute_cycles: int         # execute-queue cycles of computes
    issue_cycles: int           # the command-issue floor
    dma_cycles: int             # the shared-DMA floor
    board: str

    @property
    def seconds(self) -> float:
        return self.cycles / (BOARDS[self.board].clock_mhz * 1e6)

    def as_dict(self) -> dict:
        return {"cycles": self.cycles, "board": self.board,
                "busy": dict(zip(("load", "execute", "store"), self.busy)),
                "compute_cycles": self.compute_cycles, "issue_floor": self.issue_cycles,
                "dma_floor": self.dma_cycles,
                "array_utilization": round(self.compute_cycles / self.cycles, 6) if self.cycles else 0.0}


@dataclass(frozen=True, eq=False)
class StepCosts:
    """Per plan step: cycles of its commands in each queue, and its command count."""

    load: np.ndarray
    execute: np.ndarray
    store: np.ndarray
    commands: np.ndarray


def command_costs(funct: np.ndarray, rs1: np.ndarray, rs2: np.ndarray, cfg: GemminiConfig,
                  dataflow: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(load, execute, store) cycles of a program's commands, each as (command indices, cycles)
    for the commands of that queue that cost anything."""
    f = funct
    mvin = np.flatnonzero((f == 1) | (f == 2) | (f == 14))
    mvout = np.flatnonzero(f == 3)

    def beats(sel, wide):
        rows, cols = field(rs2[sel], 63, 48), field(rs2[sel], 47, 32)
        return rows * -(-(cols * np.where(wide, cfg.acc_bytes, cfg.elem_bytes)) // BEAT_BYTES)

    acc_in = field(rs2[mvin], 31, 31) == 1
    out_addr = field(rs2[mvout], 31, 0)
    full = ((out_addr >> 31) & 1 == 1) & ((out_addr >> 29) & 1 == 1)
    computes = np.flatnonzero((f == 4) | (f == 5))
    if dataflow == "ws":
        reuse = f[computes] == 5
        a_rows = (rs1[computes] >> np.uint64(48)).astype(np.int64)
        execute = np.where(reuse, np.maximum(a_rows, WS_REUSE_MIN_ROWS), cfg.DIM)
    else:
        execute = np.full(len(computes), cfg.DIM, np.int64)
    return (mvin, beats(mvin, acc_in)), (computes, execute), (mvout, beats(mvout, full))


def step_costs(program) -> StepCosts:
    """The costs of a generated program's commands summed per plan step. The steps of one tile
    class issue the same commands but for their DRAM addresses, which cost nothing here, so
    each class's commands are costed once (tests check this against the whole stream)."""
    cfg = program.config

    def totals(funct, rs1, rs2):
        return tuple(int(c.sum()) for _, c in command_costs(funct, rs1, rs2, cfg, program.dataflow))

    return StepCosts(*program.stream.step_sums(totals))


def simulate(costs: StepCosts, sched, cfg: GemminiConfig, slots: int, b: Board) -> Timing:
    """The three queues over the plan's steps (see the module docstring)."""
    n = len(costs.load)
    load_free = ex_free = store_free = 0
    ex_done = np.zeros(n, np.int64)
    a_ready = [0] * slots
    b_ready = [0] * slots
    a_user = [-1] * slots  # last step that read each slot
    b_user = [-1] * slots
    stored: dict[int, int] = {}
    L, E, S = costs.load.tolist(), costs.execute.tolist(), costs.store.tolist()
    la, lb = sched.load_a.tolist(), sched.load_b.tolist()
    sa, sb = sched.a_slot.tolist(), sched.b_slot.tolist()
    first, last, tile = sched.first.tolist(), sched.last.tolist(), sched.tile.tolist()
    for s in range(n):
        start = load_free
        if la[s] and a_user[sa[s]] >= 0:
            start = max(start, int(ex_done[a_user[sa[s]]]))
        if lb[s] and b_user[sb[s]] >= 0:
            start = max(start, int(ex_done[b_user[sb[s]]]))
        load_free = start + L[s]
        if la[s]:
            a_ready[sa[s]] = load_free
        if lb[s]:
            b_ready[sb[s]] = load_free
        begin = max(ex_free, a_ready[sa[s]], b_ready[sb[s]])
        if first[s] and tile[s] >= slots:
            begin = max(begin, stored[tile[s] - slots])
        ex_free = begin + E[s]
        ex_done[s] = ex_free
        a_user[sa[s]], b_user[sb[s]] = s, s
        if last[s]:
            store_free = max(store_free, ex_free) + S[s]
            stored[tile[s]] = store_free
    total_load, total_ex, total_store = sum(L), sum(E), sum(S)
    dma = total_load + total_store  # beats, one per cycle on the shared port
    issue = -(-int(costs.commands.sum()) // ISSUE_PER_CYCLE)
    cycles = max(load_free, ex_free, store_free, dma, issue) + drain_cycles(cfg)
    return Timing(int(cycles), (total_load, total_ex, total_store), total_ex, issue, dma, b.name)


def cost_program(program, plan, b: Board) -> Timing:
    """The cycle model of a generated program (its commands, grouped by plan step)."""
    from embedcsp.targets.gemmini.codegen import schedule

    memo = program.extra.setdefault("timing", {})  # the build costs the program it keeps once
    if b.name not in memo:
        memo[b.name] = simulate(step_costs(program), schedule(plan), program.config, plan.tiling.slots, b)
    return memo[b.name]


# ---------------------------------------------------------------- the roofline

@dataclass(frozen=True)
class Roofline:
    compute_cycles: int  # useful MACs / MACs per cycle
    memory_cycles: int   # minimum DRAM bytes / 16 bytes per cycle
    board: str

    @property
    def cycles(self) -> int:
        return max(self.compute_cycles, self.memory_cycles)

    def efficiency(self, modelled_cycles: int) -> float:
        return self.cycles / modelled_cycles if modelled_cycles else 0.0


def min_dram_bytes(op: Operator, out_bytes: int) -> int:
    """Bytes any program must move (docs/roofline.md): every int8 input element the operator
    really reads once (embedcsp/footprint.py: strides, dilation and windows that meet only
    padding skip elements), every output element once."""
    from embedcsp.footprint import footprint

    fp = footprint(op)
    return fp.read_elements + fp.written * out_bytes


def roofline(op: Operator, cfg: GemminiConfig, out_bytes: int, b: Board) -> Roofline:
    """max(useful MACs / (DIM x reduction lanes) per cycle, minimum DRAM bytes / 16 per cycle)."""
    per_cycle = cfg.DIM * cfg.red_lanes
    return Roofline(-(-op.macs // per_cycle), -(-min_dram_bytes(op, out_bytes) // BEAT_BYTES), b.name)
