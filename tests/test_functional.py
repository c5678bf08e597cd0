"""The functional model on hand-built programs, checked against plain-loop numpy models.

Expected values are computed element by element with Python ints (docs/vta.md
section 4), never with the simulator's own vectorised code.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedcsp.accelerator import load_accelerator
from embedcsp.errors import ProgramError
from embedcsp.operator import gemm
from embedcsp.pipeline import Options, compile_operator
from embedcsp.reference import Epilogue, random_inputs, reference_output
from embedcsp.targets.vta import functional
from embedcsp.targets.vta.codegen import dram_image, output_dram
from embedcsp.targets.vta.config import (
    MEM_ACC,
    MEM_ACC_8BIT,
    MEM_INP,
    MEM_OUT,
    MEM_UOP,
    MEM_WGT,
)
from embedcsp.targets.vta.encoding import (
    ALU_ADD,
    ALU_MAX,
    ALU_MIN,
    ALU_MUL,
    ALU_SHR,
    OP_LOAD,
    OP_STORE,
    AluInsn,
    Deps,
    FinishInsn,
    GemmInsn,
    MemInsn,
    decode_program,
    encode_program,
)
from embedcsp.targets.vta.execute import execute_image, verify_program
from embedcsp.targets.vta.functional import COMPUTE, LOAD, Machine, run

ACC = load_accelerator()
CFG = ACC.config
PAT = ACC.pattern
VARIANT = load_accelerator(Path(__file__).resolve().parents[1] / "isa" / "vta_b2_i8_o32.toml")

FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")


# ---------------------------------------------------------------- helpers

def load(mem, sram, dram, y, x, stride, pads=(0, 0, 0, 0), **deps) -> MemInsn:
    y0, y1, x0, x1 = pads
    return MemInsn(OP_LOAD, mem, sram, dram, y, x, stride, y0, y1, x0, x1, Deps(**deps))


def store(sram, dram, y, x, stride, mem=MEM_OUT, **deps) -> MemInsn:
    return MemInsn(OP_STORE, mem, sram, dram, y, x, stride, deps=Deps(**deps))


def compute_nop(**deps) -> MemInsn:
    return MemInsn(OP_LOAD, MEM_UOP, 0, 0, 0, 0, 0, deps=Deps(**deps))


def load_nop(**deps) -> MemInsn:
    return MemInsn(OP_LOAD, MEM_INP, 0, 0, 0, 0, 0, deps=Deps(**deps))


def uop_words(uops) -> np.ndarray:
    """Micro-ops packed by hand for the default config: dst [10:0], src [21:11], wgt [31:22]."""
    return np.array([d | s << 11 | w << 22 for d, s, w in uops], dtype="<u4")


def wrap32(v: int) -> int:
    return (v + (1 << 31)) % (1 << 32) - (1 << 31)


def wrap8(v: int) -> int:
    return (v + 128) % 256 - 128


@pytest.fixture
def run_keep(monkeypatch):
    """run() that also hands back the Machine, so SRAM contents can be checked exactly."""
    seen = []

    class Keep(Machine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self)

    monkeypatch.setattr(functional, "Machine", Keep)

    def go(insns, dram, cfg=CFG, pattern=PAT):
        seen.clear()
        final, counters = run(list(insns), dram, cfg, pattern)
        assert len(seen) == 1
        return final, counters, seen[0]

    return go


def model_load(sram: np.ndarray, dram: np.ndarray, insn: MemInsn, elem: int, dtype) -> None:
    """docs/vta.md section 4 (LOAD), one element at a time: pads are zero, rows are contiguous in SRAM."""
    y0, y1, x0, x1 = insn.y_pad_0, insn.y_pad_1, insn.x_pad_0, insn.x_pad_1
    cols = x0 + insn.x_size + x1
    rows = y0 + insn.y_size + y1
    for yy in range(rows):
        for xx in range(cols):
            e = insn.sram_base + yy * cols + xx
            sy, sx = yy - y0, xx - x0
            if 0 <= sy < insn.y_size and 0 <= sx < insn.x_size:
                a = (insn.dram_base + sy * insn.x_stride + sx) * elem
                sram[e] = dram[a:a + elem].view(dtype).reshape(sram.shape[1:])
            else:
                sram[e] = 0


def int32_bytes(values) -> np.ndarray:
    return np.asarray(values, dtype="<i4").view(np.uint8)


# ---------------------------------------------------------------- LOAD / STORE

def test_load_inp_wgt_strides_and_pads(run_keep):
    rng = np.random.default_rng(1)
    dram = rng.integers(0, 256, size=8192, dtype=np.uint8)  # random bytes everywhere
    prefill = load(MEM_INP, 0, 0, 2, 24, 8)                   # overlapping rows: stride 8 < 24
    padded = load(MEM_INP, 5, 3, 3, 2, 7, pads=(1, 2, 1, 3))  # 6 x 6 = 36 elements at 5..40
    corner = load(MEM_INP, 60, 30, 2, 1, 5, pads=(15, 0, 0, 15))  # max pads: 17 x 16 elements
    wgt = load(MEM_WGT, 10, 5, 2, 3, 4, push_next=True)
    insns = [prefill, padded, corner, wgt, compute_nop(pop_prev=True), FinishInsn()]
    final, counters, m = run_keep(insns, dram)

    inp = np.zeros((2048, 1, 16), np.int8)
    for insn in (prefill, padded, corner):
        model_load(inp, dram, insn, 16, np.int8)
    w = np.zeros((1024, 16, 16), np.int8)
    model_load(w, dram, wgt, 256, np.int8)
    assert np.array_equal(m.inp, inp)
    assert np.array_equal(m.wgt, w)
    # spot checks written out by hand
    assert np.array_equal(m.inp[5], np.zeros((1, 16), np.int8))               # top pad row
    assert np.array_equal(m.inp[5 + 6 + 1], dram[3 * 16:4 * 16].view(np.int8)[None])  # row 0, col 0
    assert np.array_equal(m.inp[5 + 2 * 6 + 2], dram[(3 + 7 + 1) * 16:(3 + 7 + 2) * 16].view(np.int8)[None])
    assert np.array_equal(m.inp[5 + 6 + 3], np.zeros((1, 16), np.int8))       # right pad
    assert np.array_equal(m.inp[41], inp[41]) and inp[41].any()                # beyond the block: untouched
    assert np.array_equal(m.wgt[10 + 3 + 1], dram[(5 + 4 + 1) * 256:(5 + 4 + 2) * 256].view(np.int8).reshape(16, 16))
    assert np.array_equal(final, dram)
    assert counters.load_bytes == {"UOP": 0, "INP": (2 * 24 + 3 * 2 + 2 * 1) * 16, "WGT": 6 * 256, "ACC": 0}
    assert counters.insns == {"load": 4, "compute": 2, "store": 0}


def test_load_acc_acc8bit_and_store_truncation(run_keep):
    rng = np.random.default_rng(2)
    special = [127, 128, -128, -129, 255, 256, -1, 2**31 - 1, -2**31, 0x12345680, -0x7F7F7F7F]
    acc_vals = rng.integers(-2**31, 2**31, size=(16, 16), dtype=np.int64)
    acc_vals.reshape(-1)[:len(special)] = special
    dram = np.zeros(8192, np.uint8)
    dram[0:1024] = int32_bytes(acc_vals.reshape(-1))                       # ACC region: 16 elements
    dram[1024:2048] = rng.integers(0, 256, size=1024, dtype=np.uint8)      # OUT region (sentinels)
    dram[2048:2048 + 64] = rng.integers(0, 256, size=64, dtype=np.uint8)   # int8 for ACC_8BIT
    acc_load = load(MEM_ACC, 0, 0, 2, 5, 6, pads=(0, 1, 1, 0))  # 3 rows x 6 = 18 elements at 0..17
    acc8 = load(MEM_ACC_8BIT, 30, 2048 // 16, 2, 2, 2)          # 4 elements at 30..33
    out = store(1, 1024 // 16 + 1, 2, 3, 5, pop_prev=True, push_prev=True)  # acc 1..6
    insns = [acc_load, replace(acc8, deps=Deps(push_next=True)), out, compute_nop(pop_next=True), FinishInsn()]
    final, counters, m = run_keep(insns, dram)

    acc = np.zeros((2048, 1, 16), np.int32)
    model_load(acc, dram, acc_load, 64, "<i4")
    for e in range(4):  # ACC_8BIT: 16 int8 sign-extended per element, x_stride 2
        y, x = divmod(e, 2)
        base = 2048 + ((y * 2 + x) * 16)
        for k in range(16):
            acc[30 + e, 0, k] = int(dram[base + k]) - 256 * (dram[base + k] >= 128)
    assert np.array_equal(m.acc, acc)
    assert m.acc[0].tolist() == [[0] * 16]                   # left pad of row 0
    assert m.acc[1].tolist() == [acc_vals[0].tolist()]

    want = dram.copy()
    for y in range(2):
        for x in range(3):
            src = acc[1 + y * 3 + x, 0]
            dst = (1024 // 16 + 1 + y * 5 + x) * 16
            for k in range(16):
                want[dst + k] = int(src[k]) & 0xFF
    assert np.array_equal(final, want)
    # acc element 1 holds acc_vals[0] (the special values) and is the first one stored
    stored = final[(1024 // 16 + 1) * 16:(1024 // 16 + 2) * 16].view(np.int8)
    assert stored[:11].tolist() == [127, -128, -128, 127, -1, 0, -1, -1, 0, -128, -127]
    assert m.acc[6].tolist() == [[0] * 16]  # the left pad of row 1 (X = 6), stored last
    assert final[(1024 // 16 + 1 + 5 + 2) * 16:(1024 // 16 + 1 + 5 + 3) * 16].tolist() == [0] * 16
    assert counters.store_bytes == 6 * 16
    assert counters.load_bytes["ACC"] == 10 * 64 + 4 * 16


# ---------------------------------------------------------------- GEMM

def gemm_model(acc, inp, wgt, insn: GemmInsn, uops) -> None:
    """docs/vta.md section 4 (GEMM) as written: for y, for x, for u."""
    for y in range(insn.iter_out):
        for x in range(insn.iter_in):
            for u in range(insn.uop_bgn, insn.uop_end):
                d, s, w = uops[u]
                a = d + y * insn.dst_factor_out + x * insn.dst_factor_in
                i = s + y * insn.src_factor_out + x * insn.src_factor_in
                ww = w + y * insn.wgt_factor_out + x * insn.wgt_factor_in
                for b in range(acc.shape[1]):
                    for o in range(acc.shape[2]):
                        if insn.reset:
                            acc[a, b, o] = 0
                        else:
                            dot = sum(int(inp[i, b, k]) * int(wgt[ww, o, k]) for k in range(inp.shape[2]))
                            acc[a, b, o] = wrap32(int(acc[a, b, o]) + dot)


def test_gemm_loops_and_affine_factors(run_keep):
    rng = np.random.default_rng(3)
    uops = [(7, 0, 0), (0, 0, 0), (1, 5, 2), (2, 2, 1)]  # entry 0 unused: the GEMM runs [1, 4)
    insn = GemmInsn(False, 1, 4, iter_out=2, iter_in=3, dst_factor_out=0, dst_factor_in=3,
                    src_factor_out=7, src_factor_in=1, wgt_factor_out=3, wgt_factor_in=1,
                    deps=Deps(pop_prev=True, push_next=True))
    acc0 = rng.integers(-2**31, 2**31, size=(9, 16), dtype=np.int64)
    acc0[0, :4] = [2**31 - 1, 2**31 - 100, -2**31, -2**31 + 5]  # accumulation must wrap
    dram = np.zeros(16384, np.uint8)
    dram[0:16] = uop_words(uops).view(np.uint8)
    dram[256:256 + 16 * 16] = rng.integers(0, 256, size=256, dtype=np.uint8)        # 16 INP elements
    dram[1024:1024 + 8 * 256] = rng.integers(0, 256, size=2048, dtype=np.uint8)      # 8 WGT elements
    dram[4096:4096 + 9 * 64] = int32_bytes(acc0.reshape(-1))                         # 9 ACC elements
    insns = [
        load(MEM_UOP, 0, 0, 1, 4, 4),
        load(MEM_ACC, 0, 4096 // 64, 1, 9, 9),
        load(MEM_INP, 0, 256 // 16, 1, 16, 16),
        load(MEM_WGT, 0, 1024 // 256, 1, 8, 8, push_next=True),
        insn,
        store(0, 12288 // 16, 3, 3, 3, pop_prev=True, push_prev=True),
        compute_nop(pop_next=True),
        FinishInsn(),
    ]
    final, counters, m = run_keep(insns, dram)

    inp = dram[256:512].view(np.int8).reshape(16, 1, 16)
    wgt = dram[1024:1024 + 2048].view(np.int8).reshape(8, 16, 16)
    acc = np.zeros((2048, 1, 16), np.int64)
    acc[:9, 0] = acc0
    gemm_model(acc, inp, wgt, insn, uops)
    assert np.array_equal(m.acc.astype(np.int64), acc)
    # one element by hand: acc[4] gets (x=1,u=2: i=5+1, w=2+1) at y=0 and (i=5+7+1, w=2+3+1) at y=1
    lane = 3
    hand = int(acc0[4, lane])
    hand += sum(int(inp[6, 0, k]) * int(wgt[3, lane, k]) for k in range(16))
    hand += sum(int(inp[13, 0, k]) * int(wgt[6, lane, k]) for k in range(16))
    assert int(m.acc[4, 0, lane]) == wrap32(hand)
    # acc[0] lanes 0..3 start at the int32 limits; only (x=0, u=(0,0,0)) writes acc[0]
    raw = [int(acc0[0, lane]) + sum(int(inp[7 * y, 0, k]) * int(wgt[3 * y, lane, k])
                                    for y in range(2) for k in range(16)) for lane in range(4)]
    assert any(not -2**31 <= r < 2**31 for r in raw)  # the case really overflows
    assert m.acc[0, 0, :4].tolist() == [wrap32(r) for r in raw]
    stored = final[12288:12288 + 9 * 16].view(np.int8).reshape(9, 16)
    assert stored.tolist() == [[wrap8(int(v)) for v in row] for row in acc[:9, 0]]
    assert counters.gemm_uops == 2 * 3 * 3


def test_gemm_reset_touches_only_addressed_elements(run_keep):
    rng = np.random.default_rng(4)
    acc0 = rng.integers(-2**31, 2**31, size=(20, 16), dtype=np.int64)
    acc0[acc0 == 0] = 1
    dram = np.zeros(8192, np.uint8)
    dram[0:8] = uop_words([(1, 3, 9), (4, 0, 0)]).view(np.uint8)
    dram[1024:1024 + 20 * 64] = int32_bytes(acc0.reshape(-1))
    reset = GemmInsn(True, 0, 2, iter_out=2, iter_in=2, dst_factor_out=10, dst_factor_in=2,
                     deps=Deps(push_next=True))
    insns = [load(MEM_UOP, 0, 0, 1, 2, 2), load(MEM_ACC, 0, 1024 // 64, 1, 20, 20), reset,
             store(0, 4096 // 16, 1, 20, 20, pop_prev=True, push_prev=True),
             compute_nop(pop_next=True), FinishInsn()]
    final, counters, m = run_keep(insns, dram)
    zeroed = {1 + 10 * y + 2 * x + du for y in range(2) for x in range(2) for du in (0, 3)}
    assert zeroed == {1, 3, 4, 6, 11, 13, 14, 16}
    for e in range(20):
        want = [0] * 16 if e in zeroed else acc0[e].tolist()
        assert m.acc[e, 0].tolist() == want
    assert counters.gemm_uops == 0  # resets are not counted (fsim gemm_counter)
    assert final[4096:4096 + 20 * 16].view(np.int8).reshape(20, 16).tolist() == [
        [0] * 16 if e in zeroed else [wrap8(int(v)) for v in acc0[e]] for e in range(20)]


# ---------------------------------------------------------------- ALU

def alu_ref(op: int, a: int, b: int) -> int:
    if op == ALU_MIN:
        return min(a, b)
    if op == ALU_MAX:
        return max(a, b)
    if op == ALU_ADD:
        return wrap32(a + b)
    if op == ALU_SHR:
        return a >> b if b >= 0 else wrap32(a << -b)
    if op == ALU_MUL:
        return wrap32(a * b)
    raise AssertionError(op)


ALU_CASES = [
    ("min_imm", ALU_MIN, True, -5),
    ("min_src", ALU_MIN, False, 0),
    ("max_imm", ALU_MAX, True, 7),
    ("max_src", ALU_MAX, False, 0),
    ("add_imm_negative", ALU_ADD, True, -300),
    ("add_imm_wraps", ALU_ADD, True, 32767),
    ("add_src_wraps", ALU_ADD, False, 0),
    ("shr_imm_right", ALU_SHR, True, 3),
    ("shr_imm_left", ALU_SHR, True, -4),
    ("shr_src_both_ways", ALU_SHR, False, 0),
    ("mul_imm", ALU_MUL, True, -7),
    ("mul_src", ALU_MUL, False, 0),
]


@pytest.mark.parametrize("name,opcode,use_imm,imm", ALU_CASES, ids=[c[0] for c in ALU_CASES])
def test_alu(run_keep, name, opcode, use_imm, imm):
    rng = np.random.default_rng(sum(map(ord, name)))
    vals = rng.integers(-2**31, 2**31, size=(32, 16), dtype=np.int64)
    vals[0, :8] = [2**31 - 1, -2**31, 2**31 - 32767, -1, 0, 1, 1 << 30, -(1 << 30)]
    if opcode == ALU_SHR and not use_imm:
        vals[20:] = rng.integers(-20, 21, size=(12, 16))  # shift amounts, both signs
        vals[20, :3] = [0, -20, 20]
    if opcode == ALU_ADD and not use_imm:
        vals[20, :2] = [1, -1]  # 2^31-1 + 1 and -2^31 + -1 wrap
    dram = np.zeros(8192, np.uint8)
    dram[0:8] = uop_words([(0, 20, 0), (1, 21, 0)]).view(np.uint8)
    dram[1024:1024 + 32 * 64] = int32_bytes(vals.reshape(-1))
    alu = AluInsn(opcode, 0, 2, iter_out=2, iter_in=3, dst_factor_out=6, dst_factor_in=2,
                  src_factor_out=6, src_factor_in=2, use_imm=use_imm, imm=imm, deps=Deps(push_next=True))
    insns = [load(MEM_UOP, 0, 0, 1, 2, 2), load(MEM_ACC, 0, 1024 // 64, 1, 32, 32), alu,
             store(0, 4096 // 16, 1, 32, 32, pop_prev=True, push_prev=True),
             compute_nop(pop_next=True), FinishInsn()]
    insns = decode_program(encode_program(insns, CFG), CFG)  # what the hardware would read
    final, counters, m = run_keep(insns, dram)

    acc = [[int(v) for v in row] for row in vals]
    for y in range(2):
        for x in range(3):
            for d, s in ((0, 20), (1, 21)):
                dst = d + 6 * y + 2 * x
                src = s + 6 * y + 2 * x
                for k in range(16):
                    acc[dst][k] = alu_ref(opcode, acc[dst][k], imm if use_imm else acc[src][k])
    assert m.acc[:32, 0].tolist() == acc
    assert counters.alu_uops == 12
    assert final[4096:4096 + 32 * 16].view(np.int8).reshape(32, 16).tolist() == [
        [wrap8(v) for v in row] for row in acc]


def test_alu_hand_values(run_keep):
    """A few results written down by hand, not computed."""
    vals = np.zeros((4, 16), np.int64)
    vals[0, :6] = [2**31 - 1, -2**31, -7, 100, -100, 1]
    vals[1, :6] = [1, -1, 2, 3, -3, 31]
    dram = np.zeros(4096, np.uint8)
    dram[0:4] = uop_words([(0, 1, 0)]).view(np.uint8)
    dram[1024:1024 + 4 * 64] = int32_bytes(vals.reshape(-1))
    progs = {
        (ALU_ADD, False, 0): [-2**31, 2**31 - 1, -5, 103, -103, 32],
        (ALU_SHR, True, 1): [2**30 - 1, -2**30, -4, 50, -50, 0],
        (ALU_SHR, True, -1): [-2, 0, -14, 200, -200, 2],
        (ALU_SHR, False, 0): [2**30 - 1, 0, -2, 12, -800, 0],  # shift by 1, -1, 2, 3, -3, 31
        (ALU_MUL, True, -2): [2, 0, 14, -200, 200, -2],
        (ALU_MIN, True, -100): [-100, -2**31, -100, -100, -100, -100],
        (ALU_MAX, False, 0): [2**31 - 1, -1, 2, 100, -3, 31],
    }
    for (op, use_imm, imm), want in progs.items():
        insns = [load(MEM_UOP, 0, 0, 1, 1, 1), load(MEM_ACC, 0, 1024 // 64, 1, 4, 4),
                 AluInsn(op, 0, 1, 1, 1, use_imm=use_imm, imm=imm), FinishInsn()]
        _, _, m = run_keep(insns, dram)
        assert m.acc[0, 0, :6].tolist() == want, (op, use_imm, imm)


def test_alu_sequential_dependencies(run_keep):
    """Later micro-ops read what earlier ones wrote (fsim runs them in order)."""
    vals = np.arange(1, 9 * 16 + 1, dtype=np.int64).reshape(9, 16)
    dram = np.zeros(4096, np.uint8)
    dram[0:12] = uop_words([(1, 0, 0), (3, 0, 0), (3, 0, 0)]).view(np.uint8)
    dram[1024:1024 + 9 * 64] = int32_bytes(vals.reshape(-1))
    prefix = AluInsn(ALU_ADD, 0, 1, 1, 7, dst_factor_in=1, src_factor_in=1)  # acc[j+1] += acc[j]
    twice = AluInsn(ALU_ADD, 1, 3, 1, 1, use_imm=True, imm=5)                # acc[3] += 5 twice
    insns = [load(MEM_UOP, 0, 0, 1, 3, 3), load(MEM_ACC, 0, 1024 // 64, 1, 9, 9), prefix, twice, FinishInsn()]
    _, _, m = run_keep(insns, dram)
    want = [[int(v) for v in row] for row in vals]
    for j in range(7):
        for k in range(16):
            want[j + 1][k] += want[j][k]
    for k in range(16):
        want[3][k] += 10
    assert m.acc[:9, 0].tolist() == want
    assert m.acc[7, 0, 0] == 1 + 17 + 33 + 49 + 65 + 81 + 97 + 113


# ---------------------------------------------------------------- rejections

def _finish_after_load():
    return [compute_nop(pop_prev=True), FinishInsn()]


REJECTIONS = {
    "deadlock": ([compute_nop(pop_prev=True), FinishInsn()],
                 r"deadlock: compute at instruction 0 waits on l2g"),
    "leftover_token": ([compute_nop(push_next=True), FinishInsn()],
                       r"tokens left in queues at FINISH: g2s=1"),
    "leftover_g2l": ([load_nop(push_next=True), compute_nop(pop_prev=True, push_prev=True), FinishInsn()],
                     r"tokens left in queues at FINISH: g2l=1"),
    "raw_race": ([load(MEM_UOP, 0, 0, 1, 1, 1), load(MEM_INP, 0, 0, 1, 1, 1),
                  GemmInsn(False, 0, 1, 1, 1), FinishInsn()],
                 r"race on INP: instruction 2 \(GemmInsn, compute\) reads"),
    "war_race": ([load(MEM_UOP, 0, 0, 1, 1, 1),
                  load(MEM_INP, 0, 0, 1, 1, 1, push_next=True),
                  compute_nop(push_prev=True),
                  GemmInsn(False, 0, 1, 1, 1, deps=Deps(pop_prev=True)),
                  load(MEM_INP, 0, 2, 1, 1, 1, pop_next=True, push_next=True),  # overwrites, no wait
                  compute_nop(pop_prev=True), FinishInsn()],
                 r"race on INP: instruction 4 \(MemInsn, load\) writes an element that another module reads"),
    "finish_before_store": ([load(MEM_ACC, 0, 0, 1, 1, 1, push_next=True), store(0, 8, 1, 1, 1, pop_prev=True),
                             FinishInsn()],
                            r"FINISH is not ordered after the store module's last instruction"),
    "finish_before_load": ([load(MEM_INP, 0, 0, 1, 1, 1), FinishInsn()],
                           r"FINISH is not ordered after the load module's last instruction"),
    "sram_overflow": ([load(MEM_INP, 2040, 0, 1, 9, 9, push_next=True)] + _finish_after_load(),
                      r"touches INP elements \[2040, 2049\) outside the buffer's 2048"),
    "sram_overflow_by_padding": ([load(MEM_INP, 2040, 0, 1, 1, 1, pads=(0, 0, 0, 8), push_next=True)]
                                 + _finish_after_load(), r"INP elements \[2040, 2049\)"),
    "gemm_index_overflow": ([load(MEM_UOP, 0, 0, 1, 1, 1),
                             GemmInsn(False, 0, 1, 1, 2, dst_factor_in=1), FinishInsn()],
                            r"indexes ACC element 2048 outside the buffer's 2048"),
    "dram_overflow": ([load(MEM_INP, 0, 253, 1, 4, 4, push_next=True)] + _finish_after_load(),
                      r"touches DRAM bytes up to 4111, beyond the 4096-byte image"),
    "wgt_padding": ([load(MEM_WGT, 0, 0, 1, 1, 1, pads=(0, 0, 1, 0), push_next=True)] + _finish_after_load(),
                    r"pads a WGT load; VTA hardware ignores padding there"),
    "store_not_out": ([load(MEM_ACC, 0, 0, 1, 1, 1, push_next=True),
                       store(0, 8, 1, 1, 1, mem=MEM_ACC, pop_prev=True, push_prev=True),
                       compute_nop(pop_next=True), FinishInsn()],
                      r"stores memory type 3; STORE supports only OUT \(4\)"),
    "gemm_hazard_adjacent": ([load(MEM_UOP, 0, 0, 1, 2, 2), GemmInsn(False, 0, 2, 1, 1), FinishInsn()],
                             (r"instruction 1 \(GemmInsn, compute\) writes an ACC element within two "
                              r"micro-ops of a previous write \(pipeline hazard\)")),
    "load_pop_prev": ([load(MEM_INP, 0, 0, 1, 1, 1, pop_prev=True, push_next=True)] + _finish_after_load(),
                      r"instruction 0 \(MemInsn, load\) sets pop_prev, which the load module does not have"),
    "store_pop_next": ([store(0, 8, 1, 1, 1, pop_next=True), FinishInsn()],
                       r"sets pop_next, which the store module does not have"),
    "flag_checked_before_running": ([compute_nop(pop_prev=True), store(0, 8, 1, 1, 1, push_next=True),
                                     FinishInsn()],  # would deadlock first if run in order
                                    r"instruction 1 \(MemInsn, store\) sets push_next, which the store module"),
    "load_push_prev": ([load_nop(push_prev=True), FinishInsn()],
                       r"sets push_prev, which the load module does not have"),
    "no_finish": ([load(MEM_UOP, 0, 0, 1, 1, 1)], r"the program ended without FINISH"),
    "after_finish": ([FinishInsn(), compute_nop()], r"instructions follow FINISH"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_rejections(case):
    insns, message = REJECTIONS[case]
    dram = np.zeros(4096, np.uint8)
    dram[0:16] = uop_words([(2047, 0, 0), (2047, 1, 1), (0, 0, 0), (0, 0, 0)]).view(np.uint8)
    with pytest.raises(ProgramError, match=message):
        run(insns, dram, CFG, PAT)


def test_rejection_controls_are_accepted():
    """The nearest correct neighbours of the rejected programs run."""
    dram = np.zeros(4096, np.uint8)
    ok = [
        [load(MEM_INP, 2039, 0, 1, 9, 9, push_next=True)] + _finish_after_load(),   # ends exactly at 2048
        [load(MEM_INP, 0, 252, 1, 4, 4, push_next=True)] + _finish_after_load(),    # ends at byte 4095
        [load(MEM_INP, 0, 0, 1, 1, 1, push_next=True), load(MEM_UOP, 0, 0, 1, 1, 1),
         GemmInsn(False, 0, 1, 1, 1, deps=Deps(pop_prev=True)), FinishInsn()],       # RAW with a token
        [load(MEM_ACC, 0, 0, 1, 1, 1, push_next=True), store(0, 8, 1, 1, 1, pop_prev=True, push_prev=True),
         compute_nop(pop_next=True), FinishInsn()],
    ]
    for insns in ok:
        run(insns, dram, CFG, PAT)


def _hazard_program(uops, **loops):
    dram = np.zeros(4096, np.uint8)
    dram[0:4 * len(uops)] = uop_words(uops).view(np.uint8)
    gemm_insn = GemmInsn(False, 0, len(uops), **loops)
    return [load(MEM_UOP, 0, 0, 1, len(uops), len(uops)), gemm_insn, FinishInsn()], dram


@pytest.mark.parametrize("dsts,loops,hazard", [
    ([5, 5], dict(iter_out=1, iter_in=1), True),
    ([5, 6, 5], dict(iter_out=1, iter_in=1), True),          # distance 2
    ([5, 6, 7, 5], dict(iter_out=1, iter_in=1), False),      # distance 3 is fine
    ([5], dict(iter_out=1, iter_in=2, dst_factor_in=0), True),
    ([5], dict(iter_out=1, iter_in=3, dst_factor_in=1), False),
    ([5, 6], dict(iter_out=2, iter_in=2, dst_factor_in=1, dst_factor_out=0), True),   # 5,6,6,7 ...
    ([5, 6, 7], dict(iter_out=2, iter_in=1, dst_factor_out=0), False),                # 5,6,7,5,6,7
    ([5], dict(iter_out=2, iter_in=2, dst_factor_in=1, dst_factor_out=0), True),      # 5,6,5,6
    ([5], dict(iter_out=3, iter_in=1, dst_factor_out=0), True),
    ([5], dict(iter_out=3, iter_in=3, dst_factor_in=1, dst_factor_out=3), False),     # 5..13
    ([5], dict(iter_out=3, iter_in=3, dst_factor_in=1, dst_factor_out=1), True),      # 5,6,7,6,...
])
def test_gemm_hazard_cases(dsts, loops, hazard):
    insns, dram = _hazard_program([(d, 0, 0) for d in dsts], **loops)
    if hazard:
        with pytest.raises(ProgramError, match="pipeline hazard"):
            run(insns, dram, CFG, PAT)
    else:
        run(insns, dram, CFG, PAT)
    # a reset may write one element twice in a row: no hazard check
    reset = [insns[0], replace(insns[1], reset=True), insns[2]]
    run(reset, dram, CFG, PAT)


# ---------------------------------------------------------------- compiled programs

def _flag_drops(program):
    for pc, insn in enumerate(program.insns):
        for flag in FLAGS:
            if getattr(insn.deps, flag):
                yield pc, flag, replace(insn, deps=replace(insn.deps, **{flag: False}))


@pytest.mark.parametrize("shape,epilogue", [
    ((40, 24, 48), Epilogue()),
    ((150, 300, 400), Epilogue("requant", 7, "floor")),  # several tiles, double-buffered slots
])
def test_every_dropped_token_is_caught(shape, epilogue):
    op = gemm(*shape)
    compiled = compile_operator(op, ACC, Options(epilogue=epilogue))
    program = compiled.program
    inputs = random_inputs(op, 0)
    assert verify_program(op, program, PAT, epilogue, inputs).ok
    tried, missed = 0, []
    for pc, flag, mutated in _flag_drops(program):
        tried += 1
        insns = list(program.insns)
        insns[pc] = mutated
        try:
            caught = not verify_program(op, replace(program, insns=tuple(insns)), PAT, epilogue, inputs).ok
        except ProgramError:
            caught = True
        if not caught:
            missed.append((pc, flag))
    n_flags = sum(getattr(i.deps, f) for i in program.insns for f in FLAGS)
    assert tried == n_flags and tried >= (6 if shape == (40, 24, 48) else 20)
    assert missed == []


def test_corrupted_weight_byte_is_a_mismatch():
    op = gemm(40, 24, 48)
    program = compile_operator(op, ACC).program
    inputs = random_inputs(op, 5)
    dram = dram_image(program, inputs)
    out_at = output_dram(program, op.output.shape)
    region = program.regions["wgt"]
    emap = program.element_maps["wgt"].reshape(-1)
    assert region.size == emap.size
    real = np.flatnonzero(emap >= 0)
    rng = np.random.default_rng(0)
    tensor = program.tensors["wgt"]
    for pos in rng.choice(real, size=5, replace=False):
        bad = dram.copy()
        bad[region.offset + pos] ^= 0x01
        got, _ = execute_image(program.insns, bad, CFG, PAT, out_at)
        want = reference_output(op, inputs, Epilogue())
        assert (got != want).any()
        # and the result is exactly the reference of the corrupted input
        corrupted = {k: v.copy() for k, v in inputs.items()}
        corrupted[tensor].reshape(-1)[emap[pos]] ^= 0x01
        assert np.array_equal(got, reference_output(op, corrupted, Epilogue()))
    # bytes that hold padding lanes never reach the output
    pad = np.flatnonzero(emap < 0)
    assert pad.size > 0
    noisy = dram.copy()
    noisy[region.offset + pad] = rng.integers(0, 256, size=pad.size, dtype=np.uint8)
    got, _ = execute_image(program.insns, noisy, CFG, PAT, out_at)
    assert np.array_equal(got, reference_output(op, inputs, Epilogue()))


# ---------------------------------------------------------------- dense fast path vs generic path

def _random_gemm(rng, dense: bool, limits):
    """A GEMM (and its micro-ops) whose indices stay below `limits` = (acc, inp, wgt)."""
    while True:
        if dense:
            # Three roles R (acc, inp), J (acc, wgt), L (inp, wgt), placed on y, x and the micro-ops.
            n = {r: int(rng.integers(1, 5)) for r in "RJL"}
            stride = {r: (int(rng.integers(1, 4)), int(rng.integers(1, 4))) for r in "RJL"}
            order = list(rng.permutation(list("RJL")))
            base = [int(rng.integers(0, 8)) for _ in range(3)]

            def offs(role, t, stride=stride):
                sa, sb = stride[role]
                return {"R": (sa * t, sb * t, 0), "J": (sa * t, 0, sb * t), "L": (0, sa * t, sb * t)}[role]
            u_role, y_role, x_role = order
            uops = [tuple(b + o for b, o in zip(base, offs(u_role, t))) for t in range(n[u_role])]
            fy, fx = offs(y_role, 1), offs(x_role, 1)
            insn = GemmInsn(False, 0, len(uops), n[y_role], n[x_role], fy[0], fx[0], fy[1], fx[1], fy[2], fx[2])
        else:
            n_u = int(rng.integers(1, 6))
            uops = [tuple(int(rng.integers(0, lim // 2)) for lim in limits) for _ in range(n_u)]
            f = [int(rng.integers(0, 4)) for _ in range(6)]
            insn = GemmInsn(False, 0, n_u, int(rng.integers(1, 4)), int(rng.integers(1, 4)), *f)
        top = [max(u[k] for u in uops) + (insn.iter_out - 1) * (insn.dst_factor_out, insn.src_factor_out,
               insn.wgt_factor_out)[k] + (insn.iter_in - 1) * (insn.dst_factor_in, insn.src_factor_in,
               insn.wgt_factor_in)[k] for k in range(3)]
        if all(t < lim for t, lim in zip(top, limits)):
            return insn, uops


def _brute_hazard(insn, uops) -> bool:
    seq = [u[0] + y * insn.dst_factor_out + x * insn.dst_factor_in
           for y in range(insn.iter_out) for x in range(insn.iter_in) for u in uops]
    return any(seq[j] == seq[j - d] for j in range(len(seq)) for d in (1, 2) if j >= d)


def _explicit(acc, inp, wgt, insn, uops):
    """One numpy tile product per micro-op, in (y, x, u) order."""
    out = acc.astype(np.int64)
    for y in range(insn.iter_out):
        for x in range(insn.iter_in):
            for d, s, w in uops:
                a = d + y * insn.dst_factor_out + x * insn.dst_factor_in
                i = s + y * insn.src_factor_out + x * insn.src_factor_in
                ww = w + y * insn.wgt_factor_out + x * insn.wgt_factor_in
                out[a] = (out[a] + inp[i].astype(np.int64) @ wgt[ww].astype(np.int64).T).astype(np.int32)
    return out.astype(np.int32)


class _Spy(Machine):
    """Counts how often the generic (non-dense) GEMM path runs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generic_calls = 0

    def _gemm_generic(self, *args):
        self.generic_calls += 1
        return super()._gemm_generic(*args)


@pytest.mark.parametrize("accel", [ACC, VARIANT], ids=["default", "variant"])
def test_dense_and_generic_gemm_agree(monkeypatch, accel):
    cfg, pattern = accel.config, accel.pattern
    limits = (48, 40, 32)  # acc, inp, wgt elements in use
    rng = np.random.default_rng(11 + cfg.batch)
    vc = np.array([0, 1, 0])
    seen = {"dense": 0, "generic": 0, "hazard": 0}
    for trial in range(200):
        dense = trial % 2 == 0
        insn, uops = _random_gemm(rng, dense, limits)
        inp = rng.integers(-128, 128, size=(limits[1], cfg.batch, cfg.block_in))
        wgt = rng.integers(-128, 128, size=(limits[2], cfg.block_out, cfg.block_in))
        acc0 = rng.integers(-2**31, 2**31, size=(limits[0], cfg.batch, cfg.block_out))
        acc0.reshape(-1)[:4] = [2**31 - 1, 2**31 - 2, -2**31, -2**31 + 1]
        machines = []
        for force_generic in (False, True):
            m = _Spy(cfg, pattern, np.zeros(16, np.uint8))
            m.write_sram(MEM_INP, 0, inp)
            m.write_sram(MEM_WGT, 0, wgt)
            m.write_sram(MEM_ACC, 0, acc0)
            m.uop[:, :len(uops)] = np.array(uops).T
            machines.append(m)
        assert np.array_equal(machines[0].inp[:limits[1]], inp) and np.array_equal(machines[0].wgt[:limits[2]], wgt)
        want = _explicit(machines[0].acc, machines[0].inp, machines[0].wgt, insn, uops)
        if _brute_hazard(insn, uops):
            seen["hazard"] += 1
            with pytest.raises(ProgramError, match="pipeline hazard"):
                machines[0].gemm(insn, COMPUTE, 1, vc, "t")
            continue
        fast, slow = machines
        fast.gemm(insn, COMPUTE, 1, vc, "t")
        with monkeypatch.context() as mp:
            mp.setattr(functional, "_dense_roles", lambda axes: None)
            slow.gemm(insn, COMPUTE, 1, vc, "t")
        assert slow.generic_calls == 1
        assert np.array_equal(fast.acc, want), (insn, uops)
        assert np.array_equal(slow.acc, want), (insn, uops)
        if dense:
            assert fast.generic_calls == 0, (insn, uops)  # the fast path really ran
        seen["generic" if fast.generic_calls else "dense"] += 1
        assert fast.counters.gemm_uops == slow.counters.gemm_uops == insn.iter_out * insn.iter_in * len(uops)
    assert seen["dense"] >= 40 and seen["generic"] >= 20 and seen["hazard"] >= 5, seen


def test_product_kernels_are_factored_for_the_dense_path():
    from embedcsp.targets.vta.functional import _factor_uops

    taps, cols = np.arange(3) * 7, np.arange(5)  # prime lengths: no finer factors
    acc = np.tile(cols, 3)
    inp = np.repeat(taps, 5)
    wgt = (taps[:, None] + 100 * cols[None, :]).reshape(-1)
    factors = _factor_uops((acc, inp, wgt))
    assert len(factors) == 2
    np.testing.assert_array_equal(factors[0][1], taps)  # outer: the taps move inp and wgt
    np.testing.assert_array_equal(factors[1][0], cols)  # inner: the blocks move acc and wgt
    irregular = (np.array([0, 1, 5]), np.array([0, 2, 3]), np.array([0, 0, 1]))
    assert len(_factor_uops(irregular)) == 1


def test_direct_conv_gemms_run_on_the_dense_path(monkeypatch):
    """Tap kernels are products of (taps x output blocks): the per-MAC gather must not be needed."""
    from embedcsp.operator import conv2d
    from embedcsp.pipeline import Options, solve_and_verify
    from embedcsp.targets.vta import functional

    def refuse(*args, **kwargs):
        raise AssertionError("generic GEMM path taken")

    monkeypatch.setattr(functional.Machine, "_gemm_generic", refuse)
    o = solve_and_verify(conv2d(1, 32, 9, 9, 48, 3, 3, 1, 1, 1, 1), load_accelerator(),
                         Options(strategy="reference"), seed=0)
    assert o.compiled.embedding.form == "direct" and o.verification.ok


# ---------------------------------------------------------------- whole programs vs a plain interpreter

def _slow_run(insns, dram: np.ndarray, cfg):
    """docs/vta.md section 4 one element and one micro-op at a time, in program order (which is
    the execution order of a program whose modules are chained by tokens), with Python ints."""
    dram = dram.copy()
    b, bi, bo = cfg.batch, cfg.block_in, cfg.block_out
    inp = np.zeros((cfg.depth(MEM_INP), b, bi), np.int64)
    wgt = np.zeros((cfg.depth(MEM_WGT), bo, bi), np.int64)
    acc = np.zeros((cfg.depth(MEM_ACC), b, bo), np.int64)
    uops = [(0, 0, 0)] * cfg.depth(MEM_UOP)
    a_w, s_w = cfg.log_acc_depth, max(cfg.log_acc_depth, cfg.log_inp_depth)
    for insn in insns:
        if isinstance(insn, FinishInsn):
            break
        if isinstance(insn, MemInsn) and insn.opcode == OP_STORE:
            for y in range(insn.y_size):
                for x in range(insn.x_size):
                    src = acc[insn.sram_base + y * insn.x_size + x].reshape(-1)
                    at = (insn.dram_base + y * insn.x_stride + x) * b * bo
                    dram[at:at + b * bo] = [int(v) & 0xFF for v in src]
        elif isinstance(insn, MemInsn):
            if insn.x_size == 0:
                continue
            mem = insn.memory_type
            elem = cfg.elem_bytes(mem)
            cols = insn.x_pad_0 + insn.x_size + insn.x_pad_1
            rows = insn.y_pad_0 + insn.y_size + insn.y_pad_1
            for yy in range(rows):
                for xx in range(cols):
                    e = insn.sram_base + yy * cols + xx
                    sy, sx = yy - insn.y_pad_0, xx - insn.x_pad_0
                    inside = 0 <= sy < insn.y_size and 0 <= sx < insn.x_size
                    at = (insn.dram_base + sy * insn.x_stride + sx) * elem
                    data = dram[at:at + elem] if inside else np.zeros(elem, np.uint8)
                    if mem == MEM_UOP:
                        word = int(data.view("<u4")[0])
                        uops[e] = (word & ((1 << a_w) - 1), (word >> a_w) & ((1 << s_w) - 1), word >> (a_w + s_w))
                    elif mem == MEM_INP:
                        inp[e] = data.view(np.int8).reshape(b, bi)
                    elif mem == MEM_WGT:
                        wgt[e] = data.view(np.int8).reshape(bo, bi)
                    elif mem == MEM_ACC:
                        acc[e] = data.view("<i4").reshape(b, bo)
                    else:  # ACC_8BIT
                        acc[e] = data.view(np.int8).reshape(b, bo)
        elif isinstance(insn, GemmInsn):
            gemm_model(acc, inp, wgt, insn, uops)  # docs/vta.md section 4 as written
        else:  # ALU
            for y in range(insn.iter_out):
                for x in range(insn.iter_in):
                    for u in range(insn.uop_bgn, insn.uop_end):
                        d, s, _ = uops[u]
                        a = d + y * insn.dst_factor_out + x * insn.dst_factor_in
                        src = s + y * insn.src_factor_out + x * insn.src_factor_in
                        for bb in range(b):
                            for o in range(bo):
                                operand = insn.imm if insn.use_imm else int(acc[src, bb, o])
                                acc[a, bb, o] = alu_ref(insn.alu_opcode, int(acc[a, bb, o]), operand)
    return dram, inp, wgt, acc


# The token that orders one module's last instruction before the next module's first:
# (pusher's flag, popper's flag); load and store meet only through compute.
_HANDOFF = {(0, 1): ("push_next", "pop_prev"), (1, 0): ("push_prev", "pop_next"),
            (1, 2): ("push_next", "pop_prev"), (2, 1): ("push_prev", "pop_next")}
_DATA = 16384  # DRAM bytes that loads and stores use; micro-op words live above them


def _random_program(rng, cfg, limits):
    """Phases of random instructions, each on one module and chained to the next by a token, so
    program order is execution order. Returns the instructions and the micro-op words to place
    at DRAM byte _DATA."""
    acc_n, inp_n, wgt_n = limits
    a_w, s_w = cfg.log_acc_depth, max(cfg.log_acc_depth, cfg.log_inp_depth)
    words: list[int] = []
    ubuf = [(0, 0, 0)] * 16  # the UOP elements the generator has loaded so far

    def mem_load(mem, n_elems):
        elem = cfg.elem_bytes(mem)
        y, x = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        pads = (0, 0, 0, 0) if mem == MEM_WGT else tuple(int(v) for v in rng.integers(0, 2, 4))
        cols, rows = pads[2] + x + pads[3], pads[0] + y + pads[1]
        stride = int(rng.integers(max(1, x - 1), x + 4))  # rows may overlap in DRAM
        sram = int(rng.integers(0, n_elems - cols * rows + 1))
        return load(mem, sram, int(rng.integers(0, _DATA // elem - ((y - 1) * stride + x))), y, x, stride, pads)

    def uop_load(kernel):
        """A LOAD UOP of `kernel` into a random slot; returns (the load, the slot)."""
        slot = int(rng.integers(0, len(ubuf) - len(kernel) + 1))
        at = len(words)
        words.extend(d | s << a_w | w << (a_w + s_w) for d, s, w in kernel)
        ubuf[slot:slot + len(kernel)] = kernel
        return load(MEM_UOP, slot, _DATA // 4 + at, 1, len(kernel), len(kernel)), slot

    def gemm_steps(reset: bool):
        while True:
            insn, kernel = _random_gemm(rng, dense=rng.random() < 0.6, limits=limits)
            if reset or not _brute_hazard(insn, kernel):
                break
        steps = list(uop_load(kernel)[:1])
        slot = steps[0].sram_base
        insn = replace(insn, reset=reset, uop_bgn=slot, uop_end=slot + len(kernel))
        steps.append(insn)
        if not reset and rng.random() < 0.5:
            # The same instruction again over another kernel of the same length: a different GEMM.
            for _ in range(50):
                other = [tuple(int(rng.integers(0, lim // 2)) for lim in limits) for _ in kernel]
                if not _brute_hazard(insn, other) and all(
                        max(k[j] for k in other) + (insn.iter_out - 1) * fo + (insn.iter_in - 1) * fi < limits[j]
                        for j, (fo, fi) in enumerate(((insn.dst_factor_out, insn.dst_factor_in),
                                                      (insn.src_factor_out, insn.src_factor_in),
                                                      (insn.wgt_factor_out, insn.wgt_factor_in)))):
                    words.extend(d | s << a_w | w << (a_w + s_w) for d, s, w in other)
                    ubuf[slot:slot + len(other)] = other
                    steps += [load(MEM_UOP, slot, _DATA // 4 + len(words) - len(other), 1, len(other),
                                   len(other)), insn]
                    break
        return steps

    def alu_step():
        op = int(rng.choice([ALU_MIN, ALU_MAX, ALU_ADD, ALU_SHR, ALU_MUL]))
        use_imm = op == ALU_SHR or rng.random() < 0.5  # SHR by an ACC value could exceed 31
        imm = int(rng.integers(-12, 13)) if op == ALU_SHR else int(rng.integers(-2**15, 2**15))
        while True:
            bgn = int(rng.integers(0, len(ubuf) - 2))
            insn = AluInsn(op, bgn, bgn + int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(1, 3)),
                           *(int(v) for v in rng.integers(0, 3, 4)), use_imm=use_imm, imm=imm)
            kernel = ubuf[insn.uop_bgn:insn.uop_end]
            reach = (insn.iter_out - 1) * max(insn.dst_factor_out, insn.src_factor_out) + (
                insn.iter_in - 1) * max(insn.dst_factor_in, insn.src_factor_in)
            if max(max(d, s) for d, s, _ in kernel) + reach < acc_n:
                return insn

    # Every element in use starts loaded with random bytes, so no product is trivially zero.
    phases: list[tuple[int, list]] = [(LOAD, [load(MEM_INP, 0, 0, 1, inp_n, inp_n), load(MEM_WGT, 0, 0, 1, wgt_n, wgt_n)])]
    module = COMPUTE
    for k in range(int(rng.integers(4, 9))):
        body: list = [load(MEM_ACC, 0, 0, 1, acc_n, acc_n)] if k == 0 else []
        for _ in range(int(rng.integers(1, 4))):
            if module == 0:
                mem = MEM_INP if rng.random() < 0.5 else MEM_WGT
                body.append(mem_load(mem, inp_n if mem == MEM_INP else wgt_n))
            elif module == 2:
                y, x = int(rng.integers(1, 3)), int(rng.integers(1, 5))
                stride = x + int(rng.integers(-1, 3)) if y > 1 else x
                top = _DATA // cfg.out_elem_bytes - ((y - 1) * stride + x)
                body.append(store(int(rng.integers(0, acc_n - x * y)), int(rng.integers(0, top)), y, x, stride))
            else:
                kind = rng.choice(["gemm", "gemm", "reset", "alu", "acc", "acc8"])
                if kind in ("gemm", "reset"):
                    body += gemm_steps(kind == "reset")
                elif kind == "alu":
                    body.append(alu_step())
                else:
                    body.append(mem_load(MEM_ACC if kind == "acc" else MEM_ACC_8BIT, acc_n))
        phases.append((module, body))
        module = int(rng.choice([m for m in (0, 1, 2) if (module, m) in _HANDOFF]))
    if phases[-1][0] == COMPUTE:
        phases[-1][1].append(FinishInsn())
    else:
        phases.append((COMPUTE, [FinishInsn()]))
    insns = []
    for k, (mod, body) in enumerate(phases):
        if k + 1 < len(phases):
            push, pop = _HANDOFF[(mod, phases[k + 1][0])]
            body[-1] = replace(body[-1], deps=replace(body[-1].deps, **{push: True}))
            nxt = phases[k + 1][1]
            nxt[0] = replace(nxt[0], deps=replace(nxt[0].deps, **{pop: True}))
        insns += body
    return insns, words


@pytest.mark.parametrize("accel", [ACC, VARIANT], ids=["default", "variant"])
def test_random_programs_match_the_plain_interpreter(run_keep, accel):
    """The fast paths (decoded columns, cached plans, strided views, float32 products) give the
    final DRAM and every SRAM element the plain interpreter gives, from records and from bytes."""
    cfg, pattern = accel.config, accel.pattern
    limits = (48, 40, 32)
    rng = np.random.default_rng(23 + cfg.batch)
    kinds = {"gemm": 0, "regemm": 0, "store": 0, "alu": 0}
    for trial in range(30):
        insns, words = _random_program(rng, cfg, limits)
        dram = rng.integers(0, 256, size=_DATA + 4 * len(words), dtype=np.uint8)
        dram[_DATA:] = np.array(words, dtype="<u4").view(np.uint8)
        want_dram, want_inp, want_wgt, want_acc = _slow_run(insns, dram, cfg)
        final, counters, m = run_keep(insns, dram, cfg, pattern)
        assert np.array_equal(final, want_dram), trial
        assert np.array_equal(m.inp, want_inp) and np.array_equal(m.wgt, want_wgt), trial
        assert np.array_equal(m.acc.astype(np.int64), want_acc), trial
        binary, counters_b = functional.run_binary(encode_program(insns, cfg), dram, cfg, pattern)
        assert np.array_equal(binary, final) and counters_b.as_dict() == counters.as_dict()
        gemms = [i for i in insns if isinstance(i, GemmInsn) and not i.reset]
        assert counters.gemm_uops == sum(i.iter_out * i.iter_in * (i.uop_end - i.uop_bgn) for i in gemms)
        kinds["gemm"] += len(gemms)
        kinds["regemm"] += len(gemms) - len(set(gemms))
        kinds["store"] += counters.store_bytes > 0
        kinds["alu"] += counters.alu_uops > 0
    assert kinds["gemm"] >= 30 and kinds["regemm"] >= 5 and kinds["store"] >= 10 and kinds["alu"] >= 5, kinds


def test_blas_threads_follow_the_faster_setting_and_keep_checking():
    """The chooser measures both thread counts, uses the faster, and notices when load changes."""
    calls = []
    chooser = functional.BlasThreads(calls.append, 2)
    speed = {1: 1.0, 2: 10.0}  # seconds per MAC: two threads ten times slower (a busy machine)

    def run(n):
        used = []
        for _ in range(n):
            t = chooser.pick()
            used.append(t)
            chooser.record(t, speed[t] * 1000, 1000)
        return used

    first = run(2000)
    assert first[:2] == [1, 2]                       # each setting is measured once first
    assert first[2:].count(2) == len(range(320, 2001, 320))  # then the 10x slower one every 32 x 10th
    assert calls[:2] == [1, 2] and calls[-1] == 1     # the setter hears only changes
    speed[2] = 0.1                                   # the machine went idle: two threads win
    later = run(4000)
    assert later[-1000:].count(2) > 950
    assert functional.BlasThreads(None, 2).pick() is None  # no setter: nothing chosen
    assert functional.BlasThreads(calls.append, 1).pick() is None  # one core: nothing to choose
