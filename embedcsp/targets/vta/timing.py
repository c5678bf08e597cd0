"""Cycle model of a VTA program under decoupled access-execute (docs/vta.md section 7).

The load, compute and store modules each run their instructions in program
order; an instruction starts when its module is free and every token it pops
has been pushed; its pushes happen when it ends. So the three modules overlap
exactly as far as the program's tokens allow: a program without double
buffering is costed serial, an overlapped one is not. Costs per instruction:

    GEMM   iter_out * iter_in * micro-ops cycles (II = 1) + pipeline fill
    ALU    ALU_II * iter_out * iter_in * micro-ops (+ fill)
    LOAD   ceil(bytes / bus bytes) + rows * DMA row cost + pad elements + issue
    STORE  the same with OUT elements
    NOP, FINISH   issue cost only

Constants and their sources live in `Board`; fetch, DRAM latency and finite
instruction queues are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from embedcsp.errors import BadInput, ProgramError
from embedcsp.targets.vta.config import VtaConfig
from embedcsp.targets.vta.encoding import AluInsn, FinishInsn, GemmInsn, Insn
from embedcsp.targets.vta.functional import (
    COMPUTE,
    LOAD,
    MODULE_NAMES,
    QUEUES,
    STORE,
    module_of,
)


@dataclass(frozen=True)
class Board:
    """Clock, bus and per-instruction costs of one VTA board."""

    name: str
    clock_mhz: float
    bus_bytes: int  # AXI width: pkg_config's LOG_BUS_WIDTH 6 -> 8 B, 7 -> 16 B
    gemm_fill: int = 8  # GEMM pipeline depth: docs/vta.md section 7 estimates 5-10 cycles
    alu_ii: int = 2  # HLS ALU loop II (docs/vta.md section 7)
    dma_row: int = 2  # cycles to start each row of a 2-D transfer (burst setup)
    issue: int = 1  # decode and dispatch of any instruction


BOARDS = {
    "pynq": Board("pynq", 100.0, 8),
    "ultra96": Board("ultra96", 333.0, 16),
}


def board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise BadInput(f"unknown board {name!r}: expected one of {', '.join(BOARDS)}") from None


@dataclass(frozen=True)
class Timing:
    cycles: int  # when FINISH ends
    busy: tuple[int, int, int]  # cycles each module spent executing (load, compute, store)
    gemm_cycles: int  # cycles the GEMM core spent on non-reset micro-ops
    board: str

    @property
    def seconds(self) -> float:
        return self.cycles / (BOARDS[self.board].clock_mhz * 1e6)

    def as_dict(self) -> dict:
        return {"cycles": self.cycles, "board": self.board,
                "busy": dict(zip(MODULE_NAMES, self.busy)), "gemm_cycles": self.gemm_cycles,
                "gemm_utilization": round(self.gemm_cycles / self.cycles, 6) if self.cycles else 0.0}


def cost(insn: Insn, cfg: VtaConfig, b: Board) -> int:
    """Cycles one instruction occupies its module."""
    if isinstance(insn, GemmInsn):
        return insn.iter_out * insn.iter_in * (insn.uop_end - insn.uop_bgn) + b.gemm_fill + b.issue
    if isinstance(insn, AluInsn):
        return b.alu_ii * insn.iter_out * insn.iter_in * (insn.uop_end - insn.uop_bgn) + b.gemm_fill + b.issue
    if isinstance(insn, FinishInsn) or insn.x_size == 0:
        return b.issue
    elem = cfg.elem_bytes(insn.memory_type)
    data = insn.x_size * insn.y_size * elem
    xt = insn.x_pad_0 + insn.x_size + insn.x_pad_1
    yt = insn.y_pad_0 + insn.y_size + insn.y_pad_1
    pads = xt * yt - insn.x_size * insn.y_size
    return -(-data // b.bus_bytes) + insn.y_size * b.dma_row + pads + b.issue


def simulate(insns: list[Insn], cfg: VtaConfig, b: Board) -> Timing:
    """Earliest start of every instruction given module order and token order."""
    program: list[list[Insn]] = [[], [], []]
    for insn in insns:
        program[module_of(insn)].append(insn)
    queues: dict[str, list[int]] = {q: [] for q in ("l2g", "g2l", "g2s", "s2g")}
    popped = {q: 0 for q in queues}
    pos = [0, 0, 0]
    free_at = [0, 0, 0]
    busy = [0, 0, 0]
    gemm = 0
    finish = None
    while finish is None:
        progress = False
        for mod in (LOAD, COMPUTE, STORE):
            while pos[mod] < len(program[mod]):
                insn = program[mod][pos[mod]]
                pops = [QUEUES[(mod, f)] for f in ("pop_prev", "pop_next") if getattr(insn.deps, f)]
                if any(popped[q] >= len(queues[q]) for q in pops):
                    break
                start = free_at[mod]
                for q in pops:
                    start = max(start, queues[q][popped[q]])
                    popped[q] += 1
                c = cost(insn, cfg, b)
                end = start + c
                free_at[mod] = end
                busy[mod] += c
                if isinstance(insn, GemmInsn) and not insn.reset:
                    gemm += insn.iter_out * insn.iter_in * (insn.uop_end - insn.uop_bgn)
                for f in ("push_prev", "push_next"):
                    if getattr(insn.deps, f):
                        queues[QUEUES[(mod, f)]].append(end)
                pos[mod] += 1
                progress = True
                if isinstance(insn, FinishInsn):
                    finish = end
                    break
            if finish is not None:
                break
        if finish is None and not progress:
            raise ProgramError("the timing model found the program deadlocked; run the functional model")
    return Timing(int(max(finish, *free_at)), tuple(busy), gemm, b.name)


@dataclass(frozen=True)
class Roofline:
    compute_cycles: int  # useful MACs / MACs per cycle
    memory_cycles: int  # the busier AXI direction: max(read_cycles, write_cycles)
    board: str
    read_cycles: int = 0  # bytes the operator must read / bus bytes per cycle
    write_cycles: int = 0  # bytes it must write / bus bytes per cycle

    @property
    def cycles(self) -> int:
        return max(self.compute_cycles, self.memory_cycles)

    def efficiency(self, modelled_cycles: int) -> float:
        return self.cycles / modelled_cycles if modelled_cycles else 0.0


def roofline(useful_macs: int, read_bytes: int, write_bytes: int, cfg: VtaConfig, b: Board) -> Roofline:
    """The bound no program can beat (docs/roofline.md): every useful MAC once, every element
    the operator really reads (embedcsp/footprint.py) read once, every output written once.

    Reads and writes are bounded apart: VTA's data masters share one AXI port, whose read and
    write channels are independent, and so are the LOAD and STORE modules in `simulate`."""
    per_cycle = cfg.batch * cfg.block_in * cfg.block_out
    read, write = -(-read_bytes // b.bus_bytes), -(-write_bytes // b.bus_bytes)
    return Roofline(-(-useful_macs // per_cycle), max(read, write), b.name, read, write)
