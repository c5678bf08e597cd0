"""The TEMPLATE cycle model and roofline: deliberately simple, so a copier sees where theirs goes.

    compute  = MMAs x ceil(instruction MACs / macs_per_cycle)
    memory   = ceil(bytes moved / bytes_per_cycle)       (input tiles read, output tiles written)
    cycles   = max(compute, memory) + records x issue_cycles

(compute and DRAM overlap perfectly; issuing does not). Seconds are cycles at a nominal 1 GHz;
the family has one board, "generic" (a real family lists its boards and their clocks here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .build import WRITEBACK, Program

BOARD = "generic"
BOARDS = (BOARD,)
CLOCK_HZ = 1e9


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Timing:
    cycles: int
    compute_cycles: int
    memory_cycles: int
    issue_cycles: int
    board: str = BOARD

    @property
    def seconds(self) -> float:
        return self.cycles / CLOCK_HZ

    def as_dict(self) -> dict:
        return {"cycles": self.cycles, "seconds": self.seconds, "board": self.board,
                "clock_mhz": CLOCK_HZ / 1e6, "compute_cycles": self.compute_cycles,
                "memory_cycles": self.memory_cycles, "issue_cycles": self.issue_cycles}


@dataclass(frozen=True)
class Roofline:
    compute_cycles: int
    memory_cycles: int

    @property
    def cycles(self) -> int:
        return max(self.compute_cycles, self.memory_cycles)

    def efficiency(self, modelled_cycles: int) -> float:
        return self.cycles / modelled_cycles if modelled_cycles else 0.0


def traffic(program: Program) -> tuple[int, int]:
    """(bytes read, bytes written) by the program's MMAs, from the records alone."""
    cfg = program.config
    a, b, o = cfg.operand_names
    mma = program.records[1:]
    writebacks = int(np.count_nonzero(mma["byte1"] & WRITEBACK))
    width = program.regions[o].elem_bytes
    return len(mma) * (cfg.tile_lanes(a) + cfg.tile_lanes(b)), writebacks * cfg.tile_lanes(o) * width


def cost(program: Program) -> Timing:
    cfg = program.config
    load, store = traffic(program)
    compute = (len(program) - 1) * _ceil(cfg.pattern.macs, cfg.macs_per_cycle)
    memory = _ceil(load + store, cfg.bytes_per_cycle)
    issue = len(program) * cfg.issue_cycles
    return Timing(max(compute, memory) + issue, compute, memory, issue)


def roofline(program: Program, op) -> Roofline:
    """Every useful MAC at the peak rate; every input element the operator really reads
    (embedcsp/footprint.py) moved once, every output element written once."""
    from embedcsp.footprint import footprint

    cfg = program.config
    fp = footprint(op)
    nbytes = fp.written * program.regions[cfg.operand_names[2]].elem_bytes + fp.read_elements
    return Roofline(_ceil(op.macs, cfg.macs_per_cycle), _ceil(nbytes, cfg.bytes_per_cycle))
