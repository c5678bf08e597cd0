"""Cycle model of tile programs and the roofline (docs/tile.md section 8).

Each queue runs its instructions in program order, one at a time. An
instruction starts when its queue is free and every instruction it waits for
has ended. Loads and Stores share one DMA engine: a transfer holds it for its
whole cost, and the engine serves transfers in the order they become ready
(a load first on a tie). So computes overlap transfers as far as the waits
allow, and the DRAM traffic of loads and stores together is bounded by
bytes_per_cycle, which keeps the roofline a true lower bound. Costs:

    Compute   ii cycles
    Load      ISSUE + DMA_RUN * contiguous runs + ceil(bytes / bytes_per_cycle)
    Store     the same, bytes as the epilogue writes them

A "run" is a maximal stretch of consecutive DRAM bytes in the tile's element
order: a row-major tile whose rows are contiguous costs one run per row, a
transposed gather one per element. Padding (elements beyond `valid`) is
generated on chip: it costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from embedcsp.errors import ProgramError
from embedcsp.targets.tile.config import TileConfig
from embedcsp.targets.tile.program import (
    COMPUTE,
    LOAD,
    QUEUES,
    STORE,
    Compute,
    Insn,
    elem_bytes,
    queue_of,
    tile_addresses,
    waits,
)

# Modelling assumptions, not measurements of any device. They are the per-instruction and
# per-row costs embedcsp's VTA cycle model uses (embedcsp/targets/vta/timing.py, Board.issue
# and Board.dma_row), so figures of the two families are comparable.
ISSUE = 1    # cycles to issue one DMA descriptor
DMA_RUN = 2  # cycles to open each contiguous run of bytes (burst setup)


@lru_cache(maxsize=4096)
def _shape_cost(strides: tuple[int, ...], valid: tuple[int, ...], esz: int) -> tuple[int, int]:
    """(bytes, contiguous runs) of a transfer; independent of where it starts."""
    addr = tile_addresses(0, strides, valid, esz).reshape(-1)
    if addr.size == 0:
        return 0, 0
    return int(addr.size), 1 + int(np.count_nonzero(np.diff(addr) != 1))


def cost(insn: Insn, cfg: TileConfig) -> int:
    """Cycles one instruction occupies its queue (and, for a transfer, the DMA engine)."""
    if isinstance(insn, Compute):
        return cfg.ii
    nbytes, runs = _shape_cost(tuple(insn.strides), tuple(insn.valid), elem_bytes(insn, cfg))
    return ISSUE + DMA_RUN * runs + -(-nbytes // cfg.bytes_per_cycle)


@dataclass(frozen=True)
class Timing:
    cycles: int  # when the last instruction ends
    busy: tuple[int, int, int]  # cycles each queue spent executing (load, compute, store)
    compute_cycles: int  # ii x Computes: the compute unit's busy cycles

    @property
    def compute_utilization(self) -> float:
        return self.compute_cycles / self.cycles if self.cycles else 0.0

    def as_dict(self) -> dict:
        return {"cycles": self.cycles, "busy": dict(zip(QUEUES, self.busy)),
                "compute_cycles": self.compute_cycles,
                "compute_utilization": round(self.compute_utilization, 6)}


def simulate(insns: Sequence[Insn], cfg: TileConfig) -> Timing:
    """The earliest start of every instruction given queue order, waits and the one DMA engine.

    ProgramError if the waits deadlock (the functional model says which instruction)."""
    queues: list[list[Insn]] = [[], [], []]
    for insn in insns:
        queues[queue_of(insn)].append(insn)
    for q in range(3):
        for insn in queues[q]:
            if any(n > len(queues[k]) for k, n in enumerate(waits(insn))):
                raise ProgramError("the timing model found a wait that can never be met; run the "
                                   "functional model for the instruction")
    ends: list[list[int]] = [[], [], []]
    free = [0, 0, 0]
    busy = [0, 0, 0]
    dma_free = 0
    left = sum(len(q) for q in queues)
    while left:
        best = None
        for q in (LOAD, COMPUTE, STORE):
            done = len(ends[q])
            if done == len(queues[q]):
                continue
            w = waits(queues[q][done])
            if any(len(ends[k]) < w[k] for k in range(3) if k != q):
                continue
            start = max([free[q]] + [ends[k][w[k] - 1] for k in range(3) if k != q and w[k]])
            if q != COMPUTE:
                start = max(start, dma_free)
            if best is None or start < best[0]:
                best = (start, q)
        if best is None:
            raise ProgramError("the timing model found the program deadlocked; run the functional "
                               "model for the instruction")
        start, q = best
        c = cost(queues[q][len(ends[q])], cfg)
        end = start + c
        ends[q].append(end)
        free[q] = end
        busy[q] += c
        if q != COMPUTE:
            dma_free = end
        left -= 1
    return Timing(max(free), tuple(busy), cfg.ii * len(queues[COMPUTE]))


@dataclass(frozen=True)
class Roofline:
    compute_cycles: int  # useful MACs at the instruction's peak rate (MACs / ii per cycle)
    memory_cycles: int  # minimum DRAM bytes / bytes_per_cycle

    @property
    def cycles(self) -> int:
        return max(self.compute_cycles, self.memory_cycles)

    def efficiency(self, modelled_cycles: int) -> float:
        return self.cycles / modelled_cycles if modelled_cycles else 0.0


def roofline(useful_macs: int, min_dram_bytes: int, cfg: TileConfig) -> Roofline:
    """The bound no program can beat: every useful MAC issued at the peak rate, every tensor
    byte moved once over the one DMA engine. With ii = 1 the compute side is useful MACs /
    the product of the lane extents; a slower instruction (ii > 1) raises it by ii."""
    return Roofline(-(-useful_macs * cfg.ii // cfg.macs), -(-min_dram_bytes // cfg.bytes_per_cycle))
