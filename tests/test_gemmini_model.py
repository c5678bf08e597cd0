"""The Gemmini functional model against numpy computed here, and its refusals (docs/gemmini.md 4-6).

Programs are built by hand in this file (small tilers written for the test),
and every expected value is computed independently with numpy or Python
integers: matrix products in int64, float32 read-out scaling via Python's
half-to-even `round` on exact float64 values, rounding shifts with divmod.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedcsp.errors import ProgramError
from embedcsp.targets.gemmini.commands import (
    GARBAGE,
    OS,
    WS,
    ComputeAccumulated,
    ComputePreloaded,
    ConfigEx,
    ConfigLd,
    ConfigSt,
    Flush,
    Mvin,
    Mvout,
    Preload,
    encode_program,
)
from embedcsp.targets.gemmini.config import GemminiConfig, load_gemmini_config
from embedcsp.targets.gemmini.model import run, run_program

ISA = Path(__file__).resolve().parents[1] / "isa"
CFG16 = load_gemmini_config(ISA / "gemmini.toml")
CFG8 = load_gemmini_config(ISA / "gemmini_dim8.toml")
BASE = 4096
ACC = 0x80000000
ACC_ADD = 0xC0000000
FULL = 0xA0000000
ONE = 0x3F800000


def f32bits(x: float) -> int:
    return int(np.array([x], np.float32).view(np.uint32)[0])


def ref_requant(sums: np.ndarray, shift: int) -> np.ndarray:
    """clamp(rne(f32(sum) * 2^-shift)): float32 conversion, then an exact float64 product."""
    as_f32 = np.asarray(sums, np.int64).astype(np.float32).astype(np.float64)
    scaled = as_f32 * 2.0 ** -shift  # a power of two: exact in float64
    rounded = np.array([round(v) for v in scaled.ravel()], np.int64).reshape(scaled.shape)
    return np.clip(rounded, -128, 127)


def ref_rshift(values: np.ndarray, s: int) -> np.ndarray:
    """x / 2^s rounded half to even, with Python integers."""
    out = []
    for v in np.asarray(values, np.int64).ravel():
        q, r = divmod(int(v), 1 << s)
        if 2 * r > (1 << s) or (2 * r == (1 << s) and q % 2):
            q += 1
        out.append(q)
    return np.array(out, np.int64).reshape(np.shape(values))


class Image:
    """A DRAM image the test lays out: named regions at increasing addresses."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.size = 0
        self.where: dict[str, tuple[int, int]] = {}

    def put(self, name: str, array: np.ndarray) -> int:
        raw = np.ascontiguousarray(array).view(np.uint8).tobytes()
        addr = BASE + self.size
        self.where[name] = (addr, len(raw))
        self.parts.append(raw)
        self.size += len(raw) + 64  # a gap, so an overrun lands in bytes nobody expects
        self.parts.append(bytes(64))
        return addr

    def dram(self) -> np.ndarray:
        return np.frombuffer(b"".join(self.parts), np.uint8).copy()

    def get(self, out: np.ndarray, name: str, dtype, shape) -> np.ndarray:
        addr, n = self.where[name]
        return out[addr - BASE: addr - BASE + n].view(dtype).reshape(shape)


def ws_gemm(cfg: GemminiConfig, a, b, bias=None, epilogue=("saturate",), wide=1):
    """C = epilogue(A.B + bias) in WS, K summed in the accumulator. C tiles are DIM rows by
    wide*DIM columns; the bias (int32) and B come in with multi-block mvins."""
    d = cfg.DIM
    m, k = a.shape
    n = b.shape[1]
    img = Image()
    pa = img.put("A", a)
    pb = img.put("B", b)
    pd = img.put("D", bias.astype("<i4")) if bias is not None else None
    full = epilogue[0] == "int32"
    pc = img.put("C", np.zeros((m, n), "<i4" if full else np.int8))
    scale = ONE if epilogue[0] != "requant" else f32bits(2.0 ** -epilogue[1])
    cmds = [Flush(), ConfigEx(dataflow=WS),
            ConfigLd(slot=0, stride=k, block_stride=d),
            ConfigLd(slot=1, stride=n, block_stride=d),
            ConfigLd(slot=2, stride=4 * n, block_stride=d),
            ConfigSt(stride=(4 if full else 1) * n, scale_bits=scale)]
    sp_next = 0
    for i0 in range(0, m, d):
        mr = min(d, m - i0)
        for j0 in range(0, n, wide * d):
            nc = min(wide * d, n - j0)
            acc_row = 0  # one C tile at a time: accumulator rows 0 .. wide*DIM-1
            if pd is not None:
                cmds.append(Mvin(pd + 4 * (i0 * n + j0), ACC | acc_row, mr, nc, slot=2))
            for k0 in range(0, k, d):
                kr = min(d, k - k0)
                sa, sb = sp_next, sp_next + d
                sp_next += d + wide * d
                cmds.append(Mvin(pa + i0 * k + k0, sa, mr, kr, slot=0))
                cmds.append(Mvin(pb + k0 * n + j0, sb, kr, nc, slot=1))
                for jb in range(0, nc, d):
                    cols = min(d, nc - jb)
                    add = pd is not None or k0 > 0
                    c = (ACC_ADD if add else ACC) | (acc_row + jb)
                    cmds.append(Preload(sb + jb, kr, cols, c, mr, cols))
                    cmds.append(ComputePreloaded(sa, mr, kr, GARBAGE, mr, cols))
            if full:  # a full-width mvout is one block
                for jb in range(0, nc, d):
                    cols = min(d, nc - jb)
                    cmds.append(Mvout(pc + 4 * (i0 * n + j0 + jb), FULL | (acc_row + jb), mr, cols))
            else:
                cmds.append(Mvout(pc + i0 * n + j0, ACC | acc_row, mr, nc))
    return cmds, img


def run_gemm(cfg, cmds, img, shape, full=False):
    out, counters = run_program(encode_program(cmds, cfg), img.dram(), BASE, cfg)
    return img.get(out, "C", "<i4" if full else np.int8, shape), counters


def ints(rng, shape, lo=-128, hi=128):
    return rng.integers(lo, hi, shape, dtype=np.int64)


# ---------------------------------------------------------------- weight-stationary

@pytest.mark.parametrize("cfg, m, k, n, wide", [
    (CFG16, 20, 40, 24, 1),   # partial tiles in every dim
    (CFG16, 16, 16, 16, 1),
    (CFG8, 13, 21, 19, 2),    # two 8-column blocks per mvin/mvout
    (CFG8, 8, 8, 8, 1),
])
def test_ws_gemm_saturate(cfg, m, k, n, wide):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a, b = ints(rng, (m, k)), ints(rng, (k, n))
    cmds, img = ws_gemm(cfg, a.astype(np.int8), b.astype(np.int8), wide=wide)
    c, counters = run_gemm(cfg, cmds, img, (m, n))
    assert np.array_equal(c, np.clip(a @ b, -128, 127))
    assert counters.macs == m * k * n
    assert counters.store_bytes == m * n


@pytest.mark.parametrize("cfg, wide", [(CFG16, 1), (CFG8, 2)])
def test_ws_gemm_bias_requant_and_int32(cfg, wide):
    rng = np.random.default_rng(3)
    m, k, n = 17, 35, 20
    a, b = ints(rng, (m, k)), ints(rng, (k, n))
    bias = rng.integers(-(1 << 20), 1 << 20, (m, n))
    sums = a @ b + bias
    for shift in (0, 7, 12):
        cmds, img = ws_gemm(cfg, a.astype(np.int8), b.astype(np.int8), bias, ("requant", shift), wide)
        c, _ = run_gemm(cfg, cmds, img, (m, n))
        assert np.array_equal(c, ref_requant(sums, shift)), shift
    cmds, img = ws_gemm(cfg, a.astype(np.int8), b.astype(np.int8), bias, ("int32",), wide)
    c, _ = run_gemm(cfg, cmds, img, (m, n), full=True)
    assert np.array_equal(c, sums)


def small_ws(cfg, a, b, d=None, ex=None, c_addr=ACC, out="acc", st=None, preload_rows=None):
    """One preload + compute_preloaded of A (sp 0), B (sp 64), D (sp 128) on one DIM tile."""
    dim = cfg.DIM
    img = Image()
    pa, pb = img.put("A", a.astype(np.int8)), img.put("B", b.astype(np.int8))
    cmds = [ex or ConfigEx(dataflow=WS), ConfigLd(slot=0, stride=a.shape[1], block_stride=dim),
            ConfigLd(slot=1, stride=b.shape[1], block_stride=dim),
            st or ConfigSt(stride=4 * dim)]
    cmds += [Mvin(pa, 0, *a.shape), Mvin(pb, 64, *b.shape, slot=1)]
    x = GARBAGE
    if d is not None:
        pd = img.put("Dm", d.astype(np.int8))
        cmds += [ConfigLd(slot=2, stride=d.shape[1], block_stride=dim), Mvin(pd, 128, *d.shape, slot=2)]
        x = 128
    return cmds, img, x


def test_ws_transposes_scratchpad_output_relu_and_d():
    rng = np.random.default_rng(11)
    a, b, dm = ints(rng, (16, 16)), ints(rng, (16, 16)), ints(rng, (16, 16))
    for a_t, b_t in ((False, False), (True, False), (False, True)):
        cmds, img, x = small_ws(CFG16, a, b, dm, ex=ConfigEx(dataflow=WS, activation=1,
                                                             a_transpose=a_t, b_transpose=b_t))
        pc = img.put("C", np.zeros((16, 16), np.int8))
        cmds[3] = ConfigSt(stride=16)
        cmds += [Preload(64, 16, 16, 200, 16, 16), ComputePreloaded(0, 16, 16, x, 16, 16),
                 Mvout(pc, 200, 16, 16)]
        out, _ = run(cmds, img.dram(), BASE, CFG16)
        aa = a.T if a_t else a
        bb = b.T if b_t else b
        expected = np.maximum(np.clip(dm + aa @ bb, -128, 127), 0)  # scratchpad: saturate, then ReLU
        assert np.array_equal(img.get(out, "C", np.int8, (16, 16)), expected), (a_t, b_t)


def test_ws_partial_operands_and_weight_reuse():
    """bd 12 x 10 weights; two A blocks reuse them with compute_accumulated; C accumulates."""
    rng = np.random.default_rng(5)
    a1, a2, b = ints(rng, (9, 12)), ints(rng, (9, 12)), ints(rng, (12, 10))
    img = Image()
    p1, p2, pb = (img.put(n, v.astype(np.int8)) for n, v in (("A1", a1), ("A2", a2), ("B", b)))
    pc = img.put("C", np.zeros((9, 10), "<i4"))
    cmds = [ConfigEx(dataflow=WS), ConfigLd(slot=0, stride=12, block_stride=16),
            ConfigLd(slot=1, stride=10, block_stride=16), ConfigSt(stride=40),
            Mvin(p1, 0, 9, 12), Mvin(p2, 16, 9, 12), Mvin(pb, 32, 12, 10, slot=1),
            Preload(32, 12, 10, ACC | 0, 9, 10), ComputePreloaded(0, 9, 12, GARBAGE, 9, 10),
            Preload(GARBAGE, 16, 16, ACC_ADD | 0, 9, 10), ComputeAccumulated(16, 9, 12, GARBAGE, 9, 10),
            Mvout(pc, FULL | 0, 9, 10)]
    out, counters = run(cmds, img.dram(), BASE, CFG16)
    assert np.array_equal(img.get(out, "C", "<i4", (9, 10)), a1 @ b + a2 @ b)
    assert counters.macs == 2 * 9 * 12 * 10
    assert counters.commands["compute_accumulated"] == 1


# ---------------------------------------------------------------- output-stationary

def os_gemm(cfg, a, b, chunk=None):
    """C = A.B in OS with each K chunk its own chain into the accumulator (C accumulates)."""
    d = cfg.DIM
    chunk = chunk or d
    m, k = a.shape
    n = b.shape[1]
    img = Image()
    pa, pb = img.put("A", a.astype(np.int8)), img.put("B", b.astype(np.int8))
    pc = img.put("C", np.zeros((m, n), "<i4"))
    cmds = [ConfigEx(dataflow=OS), ConfigLd(slot=0, stride=k, block_stride=d),
            ConfigLd(slot=1, stride=n, block_stride=d), ConfigSt(stride=4 * n)]
    sp = 0
    for i0 in range(0, m, d):
        mr = min(d, m - i0)
        for j0 in range(0, n, d):
            nc = min(d, n - j0)
            for k0 in range(0, k, chunk):
                kr = min(chunk, k - k0)
                cmds += [Mvin(pa + i0 * k + k0, sp, mr, kr), Mvin(pb + k0 * n + j0, sp + d, kr, nc, slot=1)]
                c = (ACC_ADD if k0 else ACC) | 0
                cmds += [Preload(GARBAGE, d, d, c, mr, nc), ComputePreloaded(sp, mr, kr, sp + d, kr, nc)]
                sp += 2 * d
            cmds.append(Mvout(pc + 4 * (i0 * n + j0), FULL | 0, mr, nc))
    return cmds, img


@pytest.mark.parametrize("cfg, m, k, n", [(CFG16, 20, 40, 18), (CFG8, 11, 30, 13)])
def test_os_gemm_int32(cfg, m, k, n):
    rng = np.random.default_rng(k)
    a, b = ints(rng, (m, k)), ints(rng, (k, n))
    cmds, img = os_gemm(cfg, a, b)
    out, counters = run(cmds, img.dram(), BASE, cfg)
    assert np.array_equal(img.get(out, "C", "<i4", (m, n)), a @ b)
    assert counters.macs == m * k * n


def test_os_chain_within_31_products():
    """Two computes of 15 products each accumulate inside the array (30 <= 31); 16 + 16 do not."""
    rng = np.random.default_rng(9)
    a, b = ints(rng, (16, 32)), ints(rng, (32, 16))

    def chain(kc: int):
        img = Image()
        pa, pb = img.put("A", a.astype(np.int8)), img.put("B", b.astype(np.int8))
        pc = img.put("C", np.zeros((16, 16), "<i4"))
        cmds = [ConfigEx(dataflow=OS), ConfigLd(slot=0, stride=32, block_stride=16),
                ConfigLd(slot=1, stride=16, block_stride=16), ConfigSt(stride=64),
                Mvin(pa, 0, 16, kc), Mvin(pa + kc, 16, 16, kc),                      # A[:, :kc], A[:, kc:2kc]
                Mvin(pb, 64, kc, 16, slot=1), Mvin(pb + kc * 16, 80, kc, 16, slot=1),  # B[:kc], B[kc:2kc]
                Preload(GARBAGE, 16, 16, GARBAGE, 16, 16), ComputePreloaded(0, 16, kc, 64, kc, 16),
                Preload(GARBAGE, 16, 16, ACC | 0, 16, 16), ComputeAccumulated(16, 16, kc, 80, kc, 16),
                Mvout(pc, FULL | 0, 16, 16)]
        out, _ = run(cmds, img.dram(), BASE, CFG16)
        return img.get(out, "C", "<i4", (16, 16))

    assert np.array_equal(chain(15), a[:, :30] @ b[:30])
    with pytest.raises(ProgramError, match="OS chain reaches 32 products"):
        chain(16)


@pytest.mark.parametrize("a_t, b_t", [(False, False), (True, False), (True, True)])
def test_os_d_preload_shift_relu_to_scratchpad(a_t, b_t):
    rng = np.random.default_rng(21)
    a, b, dm = ints(rng, (16, 16)), ints(rng, (16, 16)), ints(rng, (16, 16))
    img = Image()
    pa, pb, pd = (img.put(n, x.astype(np.int8)) for n, x in (("A", a), ("B", b), ("D", dm)))
    pc = img.put("C", np.zeros((16, 16), np.int8))
    shift = 6
    cmds = [ConfigEx(dataflow=OS, activation=1, sys_shift=shift, a_transpose=a_t, b_transpose=b_t),
            ConfigLd(slot=0, stride=16, block_stride=16), ConfigSt(stride=16),
            Mvin(pa, 0, 16, 16), Mvin(pb, 16, 16, 16), Mvin(pd, 32, 16, 16),
            Preload(32, 16, 16, 48, 16, 16), ComputePreloaded(0, 16, 16, 16, 16, 16),
            Mvout(pc, 48, 16, 16)]
    out, _ = run(cmds, img.dram(), BASE, CFG16)
    aa = a.T if a_t else a
    bb = b.T if b_t else b
    expected = np.maximum(np.clip(ref_rshift(dm + aa @ bb, shift), -128, 127), 0)
    assert np.array_equal(img.get(out, "C", np.int8, (16, 16)), expected)


def test_rounding_shift_edges_in_os():
    """OS results to the scratchpad go through a half-to-even shift: ties at .5 go to even."""
    img = Image()
    # A = identity-ish column: out(i, 0) = D(i, 0) + A(i, 0) * B(0, 0) with B = 1.
    d_vals = np.array([2, 6, 10, -2, -6, 3, 5, -3, -5, 7, 127, -128, 1, -1, 0, 4], np.int64)
    dm = np.zeros((16, 16), np.int64)
    dm[:, 0] = d_vals
    pd = img.put("D", dm.astype(np.int8))
    pc = img.put("C", np.zeros((16, 16), np.int8))
    cmds = [ConfigEx(dataflow=OS, sys_shift=2), ConfigLd(slot=0, stride=16, block_stride=16),
            ConfigSt(stride=16), Mvin(pd, 0, 16, 16), Mvin(0, 16, 16, 16),  # A = zeros from address 0
            Preload(0, 16, 16, 32, 16, 16), ComputePreloaded(16, 16, 16, GARBAGE, 16, 16),
            Mvout(pc, 32, 16, 16)]
    out, _ = run(cmds, img.dram(), BASE, CFG16)
    got = img.get(out, "C", np.int8, (16, 16))[:, 0]
    # /4: 0.5->0, 1.5->2, 2.5->2, -0.5->0, -1.5->-2, 0.75->1, 1.25->1, -0.75->-1, -1.25->-1,
    # 1.75->2, 31.75->32, -32->-32, 0.25->0, -0.25->0, 0->0, 1->1
    assert got.tolist() == [0, 2, 2, 0, -2, 1, 1, -1, -1, 2, 32, -32, 0, 0, 0, 1]
    assert np.array_equal(got, ref_rshift(d_vals, 2))


# ---------------------------------------------------------------- read-out: requant, saturate, int32

def readout(cfg, sums, scale_bits, full=False, act=0):
    """mvin int32 sums into the accumulator, then mvout them (int8 via the scale, or raw)."""
    d = cfg.DIM
    rows, cols = sums.shape
    img = Image()
    ps = img.put("S", np.asarray(sums, np.int64).astype("<i4"))
    pc = img.put("C", np.zeros(sums.shape, "<i4" if full else np.int8))
    cmds = [ConfigLd(slot=2, stride=4 * cols, block_stride=d),
            ConfigSt(stride=(4 if full else 1) * cols, scale_bits=scale_bits, activation=act),
            Mvin(ps, ACC | 0, rows, cols, slot=2), Mvout(pc, (FULL if full else ACC) | 0, rows, cols)]
    out, _ = run(cmds, img.dram(), BASE, cfg)
    return img.get(out, "C", "<i4" if full else np.int8, sums.shape)


def test_requant_rounding_edges():
    s19 = f32bits(2.0**-19)
    # Section 10's case: 2^25 + 2^18 + 1 is 2^25 + 2^18 in float32, x 2^-19 = 64.5 -> 64.
    special = np.array([[(1 << 25) + (1 << 18) + 1]], np.int64)
    assert readout(CFG16, special, s19).tolist() == [[64]]
    s1 = f32bits(0.5)
    ties = np.array([[1, 3, 5, 7, -1, -3, -5, -7, 2, -2, 0, 253, 254, 255, -255, -256]], np.int64)
    # x/2: 0.5->0, 1.5->2, 2.5->2, 3.5->4, negatives mirror; 126.5->126, 127, 127.5->128->127, -128
    assert readout(CFG16, ties, s1).tolist() == [[0, 2, 2, 4, 0, -2, -2, -4, 1, -1, 0, 126, 127, 127,
                                                   -128, -128]]
    rng = np.random.default_rng(1)
    sums = rng.integers(-(1 << 31), 1 << 31, (16, 16))
    sums[0, :] = rng.integers(-(1 << 12), 1 << 12, 16)
    for shift in (0, 1, 5, 12, 19, 24, 31):
        got = readout(CFG16, sums, f32bits(2.0**-shift))
        assert np.array_equal(got, ref_requant(sums, shift)), shift


def test_saturate_and_int32_readout_and_relu():
    sums = np.array([[127, 128, -128, -129, 1 << 30, -(1 << 31), (1 << 31) - 1, 0,
                      5, -5, 100, -100, 1000, -1000, 126, -127]], np.int64)
    assert readout(CFG16, sums, ONE).tolist() == [[127, 127, -128, -128, 127, -128, 127, 0,
                                                   5, -5, 100, -100, 127, -128, 126, -127]]
    assert np.array_equal(readout(CFG16, sums, ONE, full=True), sums)
    assert readout(CFG16, sums, ONE, act=1).tolist() == [[127, 127, 0, 0, 127, 0, 127, 0,
                                                          5, 0, 100, 0, 127, 0, 126, 0]]
    # DIM = 8: a 16-column int8 read-out spans two blocks 8 rows apart; int32 one block at a time.
    rng = np.random.default_rng(2)
    wide = rng.integers(-300, 300, (8, 16))
    assert np.array_equal(readout(CFG8, wide, ONE), np.clip(wide, -128, 127))
    assert np.array_equal(readout(CFG8, wide[:, :8], ONE, full=True), wide[:, :8])


def test_mvin_scale_shrink_and_zero_address():
    rng = np.random.default_rng(4)
    x = ints(rng, (4, 16))
    img = Image()
    px = img.put("X", x.astype(np.int8))
    pc = img.put("C", np.zeros((4, 16), "<i4"))
    pz = img.put("Z", np.zeros((4, 16), "<i4"))
    ps = img.put("S", np.zeros((4, 16), np.int8))
    s = 0.3  # not a power of two: float32 rounding shows
    cmds = [ConfigLd(slot=0, stride=16, block_stride=16, scale_bits=f32bits(s), shrink=True),
            ConfigLd(slot=1, stride=16, block_stride=16, scale_bits=f32bits(-2.5)),
            ConfigSt(stride=64),
            Mvin(px, ACC | 0, 4, 16),            # shrunk: int8 scaled, sign-extended
            Mvin(px, ACC_ADD | 0, 4, 16),        # ... added on top
            Mvin(0, ACC_ADD | 0, 4, 16),         # address 0 with accumulate: unchanged
            Mvin(px, 100, 4, 16, slot=1),        # scratchpad, scale -2.5
            Mvin(0, ACC | 16, 4, 16),            # address 0: zeros
            Mvout(pc, FULL | 0, 4, 16), Mvout(pz, FULL | 16, 4, 16),
            ConfigSt(stride=16), Mvout(ps, 100, 4, 16)]
    out, counters = run(cmds, img.dram(), BASE, CFG16)
    f = np.float32(s)
    once = np.array([round(float(np.float32(v) * f)) for v in x.ravel()]).reshape(x.shape)
    once = np.clip(once, -128, 127)
    assert np.array_equal(img.get(out, "C", "<i4", (4, 16)), 2 * once)
    assert np.array_equal(img.get(out, "Z", "<i4", (4, 16)), np.zeros((4, 16)))
    # -2.5 * x is exact in float32, so odd x lands on .5 ties: -2.5 -> -2, -7.5 -> -8.
    neg = np.clip(np.array([round(-2.5 * v) for v in x.ravel()]).reshape(x.shape), -128, 127)
    assert np.array_equal(img.get(out, "S", np.int8, (4, 16)), neg)
    assert round(-2.5) == -2 and round(-7.5) == -8
    assert counters.load_bytes == 3 * 64  # address 0 reads nothing


def test_accumulate_versus_overwrite():
    rng = np.random.default_rng(8)
    p, q, r = (rng.integers(-1000, 1000, (2, 16)) for _ in range(3))
    img = Image()
    pp, pq, pr = (img.put(n, v.astype("<i4")) for n, v in (("P", p), ("Q", q), ("R", r)))
    c1, c2 = img.put("C1", np.zeros((2, 16), "<i4")), img.put("C2", np.zeros((2, 16), "<i4"))
    cmds = [ConfigLd(slot=2, stride=64, block_stride=16), ConfigSt(stride=64),
            Mvin(pp, ACC | 0, 2, 16, slot=2), Mvin(pq, ACC_ADD | 0, 2, 16, slot=2),
            Mvout(c1, FULL | 0, 2, 16),
            Mvin(pr, ACC | 0, 2, 16, slot=2), Mvout(c2, FULL | 0, 2, 16)]
    out, _ = run(cmds, img.dram(), BASE, CFG16)
    assert np.array_equal(img.get(out, "C1", "<i4", (2, 16)), p + q)
    assert np.array_equal(img.get(out, "C2", "<i4", (2, 16)), r)
    # int32 accumulation wraps like the hardware's adders.
    big = np.full((1, 16), (1 << 31) - 1, np.int64)
    img = Image()
    pb = img.put("B", big.astype("<i4"))
    pc = img.put("C", np.zeros((1, 16), "<i4"))
    cmds = [ConfigLd(slot=2, stride=64, block_stride=16), ConfigSt(stride=64),
            Mvin(pb, ACC | 0, 1, 16, slot=2), Mvin(pb, ACC_ADD | 0, 1, 16, slot=2), Mvout(pc, FULL, 1, 16)]
    out, _ = run(cmds, img.dram(), BASE, CFG16)
    assert np.all(img.get(out, "C", "<i4", (1, 16)) == -2)


# ---------------------------------------------------------------- refusals

def base_ws():
    return [ConfigEx(dataflow=WS), ConfigLd(slot=0, stride=16, block_stride=16), ConfigSt(stride=16),
            Mvin(BASE, 0, 16, 16), Mvin(BASE, 16, 16, 16)]


PAIR = [Preload(16, 16, 16, ACC, 16, 16), ComputePreloaded(0, 16, 16, GARBAGE, 16, 16)]


@pytest.mark.parametrize("cmds, words", [
    ([ConfigLd(slot=0, stride=16, block_stride=16), Mvin(BASE, GARBAGE, 1, 1)],
     "GARBAGE is not an mvin destination"),
    (base_ws() + [Mvout(BASE, GARBAGE, 1, 1)], "GARBAGE is not an mvout source"),
    ([Mvin(BASE, 0, 1, 1)], "load slot 0 is used before any config_ld"),
    ([ConfigLd(slot=0, stride=16, block_stride=16), Mvin(BASE, 0, 1, 16), Mvout(BASE + 64, 0, 1, 16)],
     "mvout before any config_st"),
    ([Preload(0, 16, 16, ACC, 16, 16)], "preload before any config_ex"),
    ([ConfigEx(set_only_strides=True)] + PAIR, "preload before any config_ex"),
    (base_ws() + [ComputePreloaded(0, 16, 16, GARBAGE, 16, 16)], "not immediately preceded by a preload"),
    (base_ws() + PAIR + [ComputeAccumulated(0, 16, 16, GARBAGE, 16, 16)],
     "not immediately preceded by a preload"),
    (base_ws() + [PAIR[0]], "ends with the preload of command 5"),
    (base_ws() + [PAIR[0], PAIR[0]], "follows the preload of command 5"),
    (base_ws() + [PAIR[0], ConfigEx(dataflow=WS)] + [PAIR[1]], "config_ex between a preload"),
    (base_ws() + [Preload(GARBAGE, 16, 16, ACC, 16, 16), ComputeAccumulated(0, 16, 16, GARBAGE, 16, 16)],
     "nothing installed in the WS array"),
    (base_ws() + PAIR + [ConfigEx(dataflow=OS), ConfigEx(dataflow=WS),
                         Preload(GARBAGE, 16, 16, ACC, 16, 16),
                         ComputeAccumulated(0, 16, 16, GARBAGE, 16, 16)],
     "nothing installed in the WS array"),
    (base_ws() + PAIR + [Preload(16, 16, 16, ACC, 16, 16), ComputeAccumulated(0, 16, 16, GARBAGE, 16, 16)],
     "give the preload GARBAGE"),
    (base_ws() + [Preload(16, 16, 16, ACC, 16, 16), ComputePreloaded(GARBAGE, 16, 16, GARBAGE, 16, 16)],
     "A is GARBAGE"),
    (base_ws() + [Preload(16, 16, 16, ACC, 16, 16), ComputePreloaded(0, 8, 16, GARBAGE, 8, 16)],
     "C has 16 rows but A only 8"),
    (base_ws() + [Preload(16, 16, 16, ACC_ADD, 16, 16), ComputePreloaded(0, 16, 16, GARBAGE, 16, 16)],
     "reads accumulator row 0 column 0 before any command wrote it"),
    (base_ws() + [Preload(16, 16, 16, ACC, 16, 16), ComputePreloaded(32, 16, 16, GARBAGE, 16, 16)],
     "reads scratchpad row 32 column 0 before any command wrote it"),
    (base_ws() + [Mvout(BASE + 256, ACC, 1, 16)], "reads accumulator row 0"),
    (base_ws() + [Preload(16, 16, 16, ACC, 16, 16), ComputePreloaded(0, 16, 16, ACC, 16, 16)],
     "accumulator address; the model reads A, B and D only from the scratchpad"),
    (base_ws() + [ConfigEx(dataflow=WS, c_stride=0)] + PAIR, "c_stride 0 writes 16 rows"),
    (base_ws() + [ConfigEx(dataflow=OS, c_stride=2), Preload(GARBAGE, 16, 16, ACC, 16, 16),
                  ComputePreloaded(0, 16, 16, 16, 16, 16)], "OS with c_stride 2"),
    (base_ws() + [ConfigEx(dataflow=OS, sys_shift=3), Preload(GARBAGE, 16, 16, ACC, 16, 16),
                  ComputePreloaded(0, 16, 16, 16, 16, 16)], "sys_shift 3"),
    (base_ws() + [ConfigEx(dataflow=OS), Preload(GARBAGE, 16, 16, GARBAGE, 16, 16),
                  ComputePreloaded(GARBAGE, 16, 16, 16, 16, 16)], "A is GARBAGE"),
    (base_ws() + [ConfigEx(dataflow=OS), Preload(GARBAGE, 16, 16, ACC, 16, 16),
                  ComputePreloaded(0, 16, 8, 16, 8, 16), Preload(GARBAGE, 16, 16, ACC, 16, 16),
                  ComputeAccumulated(0, 16, 8, 16, 8, 16)], "already wrote its C"),
    (base_ws() + [ConfigEx(dataflow=OS, b_transpose=True)], "not allowed in OS"),
    (base_ws() + [ConfigEx(activation=2)], "activation 2"),
    (base_ws() + [ConfigEx(sys_shift=40)], "sys_shift 40"),
    (base_ws() + [ConfigSt(stride=16, scale_bits=0xFFFFFFFF)], "not a finite float32"),
    (base_ws() + [ConfigSt(stride=16, scale_bits=f32bits(-1.0), activation=1)] + PAIR
     + [Mvout(BASE + 256, ACC, 16, 16)], "ReLU with a negative read-out scale"),
    (base_ws() + PAIR + [Mvout(BASE + 256, ACC, 16, 16), Mvin(BASE + 256, 32, 1, 16)],
     "reads DRAM that an earlier mvout wrote"),
    (base_ws() + PAIR + [Mvout(BASE, ACC, 16, 16)], "overwrites DRAM that an earlier mvin reads"),
    (base_ws() + PAIR + [Mvout(BASE + 256, ACC, 16, 16), ConfigSt(stride=8), Mvout(BASE + 600, ACC, 2, 16)],
     "overlap each other"),
    (base_ws() + PAIR + [Mvout(BASE + 1000, ACC, 16, 16)], "outside the image"),
    (base_ws() + PAIR + [Mvout(0, ACC, 1, 16)], "outside the image"),
    ([ConfigLd(slot=0, stride=16, block_stride=8), Mvin(BASE, 0, 16, 16)], "block_stride 8 is below rows"),
    ([ConfigLd(slot=0, stride=64, block_stride=16), Mvin(BASE, ACC, 1, 17)], "cols = 17 of 4-byte"),
    ([ConfigLd(slot=0, stride=16, block_stride=16), Mvin(BASE, 16380, 8, 16)], "scratchpad row 16387"),
    ([ConfigLd(slot=0, stride=16, block_stride=16), Mvin(BASE, 0, 17, 16)], "rows = 17"),
    ([ConfigLd(slot=0, stride=16, block_stride=16), Mvin(BASE, 0x04000000, 1, 16)], "bits 28:26"),
    ([ConfigLd(slot=0, stride=16, block_stride=16), Mvin(BASE, 0x40000000, 1, 16)], "accumulate bit"),
    ([ConfigLd(slot=0, stride=16, block_stride=16), Mvin(BASE + 2000, 0, 1, 16)], "outside the image"),
])
def test_refusals(cmds, words):
    dram = np.zeros(1024, np.uint8)
    with pytest.raises(ProgramError, match=words):
        run(cmds, dram, BASE, CFG16)


def test_twenty_bit_limit_in_ws_needs_dim_32():
    cfg = GemminiConfig(DIM=32, BANK_NUM=1, BANK_ROWS=1024, ACC_ROWS=256)
    rng = np.random.default_rng(6)
    a, b = ints(rng, (32, 31)), ints(rng, (31, 32))
    img = Image()
    pa, pb = img.put("A", a.astype(np.int8)), img.put("B", b.astype(np.int8))
    pc = img.put("C", np.zeros((32, 32), "<i4"))
    cmds = [ConfigEx(dataflow=WS), ConfigLd(slot=0, stride=31, block_stride=32),
            ConfigLd(slot=1, stride=32, block_stride=32), ConfigSt(stride=128),
            Mvin(pa, 0, 32, 31), Mvin(pb, 32, 31, 32, slot=1),
            Preload(32, 31, 32, ACC, 32, 32), ComputePreloaded(0, 32, 31, GARBAGE, 32, 32)]
    cmds.append(Mvout(pc, FULL | 0, 32, 16))  # full width: at most 16 int32 columns a request
    out, _ = run(cmds, img.dram(), BASE, cfg)
    got = img.get(out, "C", "<i4", (32, 32))[:, :16]
    assert np.array_equal(got, (a @ b)[:, :16])
    # 32 rows of weights against 32 columns of A: 32 products per output, refused.
    cmds[6] = Preload(32, 32, 32, ACC, 32, 32)
    cmds[7] = ComputePreloaded(0, 32, 32, GARBAGE, 32, 32)
    with pytest.raises(ProgramError, match="32 products per output in one WS compute"):
        run(cmds, img.dram(), BASE, cfg)


def test_dram_base_and_image_checks():
    with pytest.raises(ProgramError, match="dram_base must be a positive"):
        run([Flush()], np.zeros(16, np.uint8), 0, CFG16)
    with pytest.raises(ProgramError, match="flat uint8"):
        run([Flush()], np.zeros(16, np.int8), BASE, CFG16)
    with pytest.raises(ProgramError, match="not a Gemmini command"):
        run([object()], np.zeros(16, np.uint8), BASE, CFG16)


def test_run_leaves_the_callers_image_alone_and_counts():
    cmds, img = ws_gemm(CFG16, np.ones((4, 4), np.int8), np.ones((4, 4), np.int8))
    dram = img.dram()
    before = dram.copy()
    out, counters = run(cmds, dram, BASE, CFG16)
    assert np.array_equal(dram, before) and not np.array_equal(out, before)
    assert counters.as_dict() == {
        "commands": {"config_ex": 1, "config_ld": 3, "config_st": 1, "mvin": 1, "mvin2": 1,
                     "mvin3": 0, "mvout": 1, "preload": 1, "compute_preloaded": 1,
                     "compute_accumulated": 0, "flush": 1},
        "load_bytes": 32, "store_bytes": 16, "macs": 64}
