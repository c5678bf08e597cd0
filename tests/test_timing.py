"""The cycle model on programs whose cycle counts can be worked out by hand."""

from __future__ import annotations

import pytest

from embedcsp.accelerator import load_accelerator
from embedcsp.errors import BadInput, ProgramError
from embedcsp.operator import gemm
from embedcsp.pipeline import Options, compile_operator
from embedcsp.targets.vta.config import MEM_INP, MEM_OUT, MEM_UOP
from embedcsp.targets.vta.encoding import (
    OP_LOAD,
    OP_STORE,
    Deps,
    FinishInsn,
    GemmInsn,
    MemInsn,
)
from embedcsp.targets.vta.timing import BOARDS, board, cost, roofline, simulate

ACC = load_accelerator()
CFG = ACC.config
PYNQ = BOARDS["pynq"]

UOP_LOAD = MemInsn(OP_LOAD, MEM_UOP, 0, 0, 1, 1, 1)  # 4 B: 1 + 2 (row) + 1 (issue) = 4


def inp_load(slot: int, deps: Deps) -> MemInsn:
    # 2 rows x 4 elements x 16 B = 128 B: 16 bus cycles + 2 rows x 2 + 1 issue = 21
    return MemInsn(OP_LOAD, MEM_INP, slot * 8, 0, 2, 4, 4, deps=deps)


def test_costs_by_hand():
    assert cost(UOP_LOAD, CFG, PYNQ) == 4
    assert cost(inp_load(0, Deps()), CFG, PYNQ) == 21
    assert cost(GemmInsn(False, 0, 1, 2, 3), CFG, PYNQ) == 2 * 3 + 8 + 1
    padded = MemInsn(OP_LOAD, MEM_INP, 0, 0, 2, 4, 4, y_pad_0=1, x_pad_1=2)  # 3x6 - 2x4 = 10 pads
    assert cost(padded, CFG, PYNQ) == 21 + 10
    assert cost(MemInsn(OP_LOAD, MEM_INP, 0, 0, 0, 0, 0), CFG, PYNQ) == 1  # a NOP
    ultra = BOARDS["ultra96"]
    assert cost(inp_load(0, Deps()), CFG, ultra) == 8 + 4 + 1


def test_serial_program():
    program = [
        UOP_LOAD,                                                   # compute [0, 4)
        inp_load(0, Deps(push_next=True)),                          # load    [0, 21)
        GemmInsn(False, 0, 1, 2, 3, deps=Deps(pop_prev=True, push_next=True)),   # [21, 36)
        MemInsn(OP_STORE, MEM_OUT, 0, 0, 2, 1, 1, deps=Deps(pop_prev=True, push_prev=True)),  # [36, 45)
        MemInsn(OP_LOAD, MEM_UOP, 0, 0, 0, 0, 0, deps=Deps(pop_next=True)),     # [45, 46)
        FinishInsn(),                                               # [46, 47)
    ]
    t = simulate(program, CFG, PYNQ)
    assert t.cycles == 47
    assert t.busy == (21, 4 + 15 + 1 + 1, 9)
    assert t.gemm_cycles == 6


def test_perfectly_overlapped_program():
    """Two INP slots: every load after the first hides under the previous GEMM."""
    n = 4
    program = []
    for k in range(n):
        program.append(inp_load(k % 2, Deps(pop_next=k >= 2, push_next=True)))
        program.append(GemmInsn(False, 0, 1, 10, 10, deps=Deps(pop_prev=True, push_prev=k + 2 < n)))
    program.append(FinishInsn())
    t = simulate(program, CFG, PYNQ)
    gemm_cost = 10 * 10 + 8 + 1
    assert t.cycles == 21 + n * gemm_cost + 1
    assert t.busy[0] == n * 21


def test_same_work_serialised_costs_the_sum():
    n = 4
    program = []
    for k in range(n):
        program.append(inp_load(0, Deps(pop_next=k >= 1, push_next=True)))
        program.append(GemmInsn(False, 0, 1, 10, 10, deps=Deps(pop_prev=True, push_prev=k + 1 < n)))
    program.append(FinishInsn())
    assert simulate(program, CFG, PYNQ).cycles == n * (21 + 109) + 1


def test_memory_bound_matrix_vector():
    """N=1: each 256 B weight tile feeds one micro-op; the 8 B/cycle bus is the limit."""
    op = gemm(3072, 1, 1024)
    c = compile_operator(op, ACC)
    t = simulate(list(c.program.insns), CFG, PYNQ)
    weight_cycles = 3072 * 1024 // 8
    assert t.cycles >= weight_cycles
    assert t.gemm_cycles == 3072 * 1024 // 256
    assert t.gemm_cycles / t.cycles <= 1 / 32
    rf = roofline(op.macs, sum(x.size for x in op.inputs), op.output.size, CFG, PYNQ)
    assert rf.memory_cycles > rf.compute_cycles
    assert rf.efficiency(t.cycles) > 0.95


def test_double_buffering_beats_single_buffering():
    op = gemm(512, 512, 1024)
    double = compile_operator(op, ACC, Options(double_buffer=True))
    single = compile_operator(op, ACC, Options(double_buffer=False))
    t2 = simulate(list(double.program.insns), CFG, PYNQ).cycles
    t1 = simulate(list(single.program.insns), CFG, PYNQ).cycles
    assert t2 < t1
    rf = roofline(op.macs, sum(x.size for x in op.inputs), op.output.size, CFG, PYNQ)
    assert rf.efficiency(t2) > 0.9


def test_reads_and_writes_are_bounded_apart():
    """Loads and stores use the AXI port's two directions: the memory bound is the busier one."""
    rf = roofline(16 * 256, 800, 80, CFG, PYNQ)
    assert (rf.read_cycles, rf.write_cycles, rf.memory_cycles, rf.compute_cycles) == (100, 10, 100, 16)
    assert rf.cycles == 100 and rf.efficiency(200) == 0.5
    rf = roofline(256 * 10**4, 8, 8 * 10**4, CFG, PYNQ)
    assert (rf.memory_cycles, rf.compute_cycles, rf.cycles) == (10**4, 10**4, 10**4)


def test_deadlock_and_unknown_board():
    with pytest.raises(ProgramError, match="deadlock"):
        simulate([GemmInsn(False, 0, 1, 1, 1, deps=Deps(pop_prev=True)), FinishInsn()], CFG, PYNQ)
    with pytest.raises(BadInput, match="unknown board"):
        board("zedboard")
