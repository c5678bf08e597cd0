"""The direct conv form: data read in place, LOAD padding, micro-ops walking the taps.

Also VTA's conv2d reference strategy, which is that form with the fixed
NCHW16c / OIHW16o16i layout and C, K padded to the lanes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from embedcsp.accelerator import load_accelerator
from embedcsp.bundle import read_bundle, run_bundle, write_bundle
from embedcsp.csp import solve_embedding
from embedcsp.operator import conv2d, gemm
from embedcsp.pipeline import Options, solve_and_verify
from embedcsp.reference import Epilogue
from embedcsp.targets.vta.config import MEM_INP
from embedcsp.targets.vta.direct import MAX_UNROLL, _Tile, _unroll, direct_unsupported
from embedcsp.targets.vta.encoding import GemmInsn, MemInsn

ACC = load_accelerator()
ISA = Path(__file__).resolve().parents[1] / "isa"


def _gemms(program) -> list[GemmInsn]:
    return [i for i in program.insns if isinstance(i, GemmInsn) and not i.reset]


def test_solver_reads_wide_channel_data_in_place():
    """C a multiple of 16 and a 3x3 window: same lanes either way, the direct form moves 9x fewer bytes."""
    op = conv2d(1, 32, 14, 14, 32, 3, 3, 1, 1, 1, 1)
    o = solve_and_verify(op, ACC, Options(), seed=1)
    emb = o.compiled.embedding
    assert o.verification.ok
    assert emb.form == "direct" and emb.efficiency == 1.0
    data = next(t for t in o.transforms if t.tensor == "data")
    assert data.duplication == 1.0
    assert data.packed_bytes == data.logical_bytes == 32 * 14 * 14  # no halo, no im2col: LOAD pads
    assert o.verification.counters.load_bytes["INP"] == 32 * 14 * 14  # one tile holds the whole image


def test_solver_keeps_im2col_where_it_buys_lanes():
    emb, _ = solve_embedding(conv2d(1, 3, 20, 20, 32, 3, 3, 1, 1, 1, 1), ACC)
    assert emb.form == "matrix" and emb.group("red").fused == 27


def test_pointwise_stride2_prefers_the_packed_matrix():
    """1x1 stride 2 reads a quarter of the pixels: the host's packed matrix is smaller than the image."""
    emb, _ = solve_embedding(conv2d(1, 64, 14, 14, 32, 1, 1, 0, 0, 2, 2), ACC)
    assert emb.form == "matrix"


@pytest.mark.parametrize("shape", [
    (1, 32, 10, 10, 16, 3, 3, 1, 1, 1, 1),  # one output block: columns unrolled 5 into the kernel
    (1, 32, 9, 11, 16, 3, 3, 1, 1, 1, 1),  # Q=11 has no small divisor: one GEMM per tap
    (1, 16, 13, 13, 32, 5, 5, 2, 2, 2, 2),  # two output blocks, stride 2
    (2, 48, 7, 9, 48, 3, 3, 1, 1, 1, 1),  # batch 2, three channel blocks
    (1, 16, 9, 9, 48, 7, 7, 3, 3, 1, 1),  # 7x7 pad 3
    (1, 16, 5, 400, 32, 3, 3, 1, 1, 1, 1),  # too wide for one window: column tiles
])
def test_direct_form_verified(shape):
    op = conv2d(*shape)
    o = solve_and_verify(op, ACC, Options(strategy="reference"), seed=4)
    assert o.compiled.embedding.form == "direct"
    assert o.verification.ok and o.verification.checked == op.output.size


def test_unroll_choice_is_exact():
    def tile(width, cols, rows=4):
        return _Tile(0, 0, rows, 0, width, 0, cols, 0, 1, rows + 2, width + 2)

    assert _unroll(tile(10, 4), 9) == 1  # four output blocks: no two writes within two micro-ops
    assert _unroll(tile(10, 2), 9) == 2
    assert _unroll(tile(10, 1), 9) == 5  # 3 does not divide 10; 5 does
    assert _unroll(tile(9, 1), 9) == 3
    assert _unroll(tile(11, 1), 9) is None  # a prime width above MAX_UNROLL: per-tap GEMMs
    assert 11 > MAX_UNROLL
    assert _unroll(tile(1, 1, rows=1), 9) is None  # one output element: only per-tap GEMMs avoid the hazard


def test_wide_image_is_cut_into_column_tiles_with_padded_loads():
    op = conv2d(1, 16, 5, 400, 32, 3, 3, 1, 1, 1, 1)
    o = solve_and_verify(op, ACC, Options(strategy="reference"), seed=0)
    t = o.compiled.plan.tiling
    assert 0 < t.width < 400
    loads = [i for i in o.compiled.program.insns if isinstance(i, MemInsn) and i.memory_type == MEM_INP and i.x_size]
    assert any(i.x_pad_0 == 1 for i in loads) and any(i.x_pad_1 == 1 for i in loads)
    assert all(i.x_pad_0 == 0 and i.x_pad_1 == 0 for i in loads[1:-1] if i.y_pad_0 == 0 and 0 < i.dram_base)


def test_per_tap_gemms_when_no_unroll_fits():
    """One output pixel, one output block: every micro-op of a tap loop would write the same ACC element."""
    op = conv2d(1, 32, 3, 3, 16, 3, 3, 0, 0, 1, 1)
    o = solve_and_verify(op, ACC, Options(strategy="reference"), seed=0)
    gemms = _gemms(o.compiled.program)
    assert o.verification.ok
    assert all(g.uop_end - g.uop_bgn == 1 for g in gemms)  # one tap, one output block each
    assert len(gemms) == 9 * 2  # 9 taps x 2 channel blocks


@pytest.mark.parametrize("shape", [
    (1, 3, 12, 12, 48, 3, 3, 1, 1, 2, 2),
    (2, 16, 8, 8, 20, 3, 3, 1, 1, 1, 1),
    (1, 1, 16, 60, 32, 5, 20, 0, 0, 2, 2),
    (1, 64, 7, 7, 64, 1, 1, 0, 0, 1, 1),
])
def test_reference_conv_is_the_fixed_tvm_layout(shape):
    n, c, h, w, k, r, s, *_ = shape
    op = conv2d(*shape)
    o = solve_and_verify(op, ACC, Options(strategy="reference"), seed=2)
    emb = o.compiled.embedding
    assert o.verification.ok
    assert emb.form == "direct"
    assert emb.bound == {"inp": "data", "wgt": "weight", "acc": "out"}
    assert emb.group("red").dims == ("c",) and emb.group("col").dims == ("k",)
    p, q = op.extents["p"], op.extents["q"]
    assert emb.padded_macs == n * p * q * r * s * 16 * math.ceil(c / 16) * 16 * math.ceil(k / 16)
    assert emb.efficiency == pytest.approx(c * k / (16 * math.ceil(c / 16) * 16 * math.ceil(k / 16)))


def test_solver_beats_reference_on_a_single_channel_layer():
    op = conv2d(1, 1, 32, 64, 32, 5, 5, 0, 0, 2, 2)
    ours = solve_and_verify(op, ACC, Options(), seed=0)
    ref = solve_and_verify(op, ACC, Options(strategy="reference"), seed=0)
    assert ours.verification.ok and ref.verification.ok
    assert ref.compiled.embedding.efficiency == 1 / 16
    assert ours.compiled.embedding.efficiency == 25 / 32
    assert ref.timing.cycles > 5 * ours.timing.cycles


def test_direct_form_requant_epilogue():
    op = conv2d(1, 32, 8, 8, 32, 3, 3, 1, 1, 1, 1)
    o = solve_and_verify(op, ACC, Options(epilogue=Epilogue("requant", 7)), seed=6)
    assert o.compiled.embedding.form == "direct" and o.verification.ok


def test_direct_form_on_a_variant_with_batch_lanes():
    """BATCH=2, BLOCK_IN=8, BLOCK_OUT=32: the batch fills the BATCH lanes (Q=7 would pad one)."""
    acc = load_accelerator(ISA / "vta_b2_i8_o32.toml")
    op = conv2d(4, 16, 6, 7, 32, 3, 3, 1, 1, 1, 1)
    o = solve_and_verify(op, acc, Options(), seed=0)
    emb = o.compiled.embedding
    assert emb.form == "direct" and emb.group("row").dims == ("n",)
    assert o.verification.ok


def test_direct_bundle_reruns(tmp_path):
    op = conv2d(1, 16, 9, 9, 32, 3, 3, 1, 1, 2, 2)
    o = solve_and_verify(op, ACC, Options(strategy="reference"), seed=0)
    write_bundle(tmp_path, o.compiled, o.inputs, 0, o.verification, o.transforms)
    bundle = read_bundle(tmp_path)
    assert bundle.manifest["embedding"]["form"] == "direct"
    for seed in (1, 2):
        assert run_bundle(bundle, seed).ok


@pytest.mark.parametrize("shape,border", [
    ((1, 16, 7, 7, 32, 1, 1, 3, 3, 2, 2), 3),  # conv-server-50's shape: corner outputs read only padding
    ((1, 16, 4, 5, 16, 17, 17, 16, 16, 1, 1), 16),  # padding beyond LOAD's 15
])
def test_border_load_cannot_pad_is_written_by_the_host(shape, border):
    op = conv2d(*shape)
    o = solve_and_verify(op, ACC, Options(strategy="reference"), seed=0)
    assert o.compiled.embedding.form == "direct" and o.verification.ok
    n, c, h, w = shape[:4]
    data = next(t for t in o.transforms if t.tensor == "data")
    assert data.packed_bytes == n * 16 * (h + 2 * border) * (w + 2 * border)
    loads = [i for i in o.compiled.program.insns if isinstance(i, MemInsn) and i.memory_type == MEM_INP]
    assert all(i.y_pad_0 == i.y_pad_1 == i.x_pad_0 == i.x_pad_1 == 0 for i in loads)


def test_only_conv2d_has_a_direct_form():
    assert direct_unsupported(gemm(4, 4, 4)) == "gemm has no filter window"
    assert direct_unsupported(conv2d(1, 16, 8, 8, 16, 1, 1, 1, 1, 1, 1)) is None


def test_broken_direct_program_is_rejected():
    """Drop the LOAD padding of one window: the functional model must see wrong outputs."""
    from dataclasses import replace

    from embedcsp.pipeline import compile_operator
    from embedcsp.reference import random_inputs, reference_output
    from embedcsp.targets.vta.codegen import dram_image, output_dram
    from embedcsp.targets.vta.execute import execute_image

    op = conv2d(1, 16, 6, 6, 16, 3, 3, 1, 1, 1, 1)
    c = compile_operator(op, ACC, Options(strategy="reference"))
    insns = list(c.program.insns)
    at = next(k for k, i in enumerate(insns) if isinstance(i, MemInsn) and i.memory_type == MEM_INP and i.y_pad_0)
    bad = insns[at]
    insns[at] = replace(bad, y_pad_0=0, y_pad_1=bad.y_pad_1 + bad.y_pad_0)  # the window slides up a row
    inputs = random_inputs(op, 0)
    dram = dram_image(c.program, inputs)
    out = output_dram(c.program, op.output.shape)
    got, _ = execute_image(insns, dram, c.program.config, ACC.pattern, out)
    assert not np.array_equal(got, reference_output(op, inputs, Epilogue()))


def _grouped(n, c, h, w, k, r, s, groups, stride=(1, 1), pads=(1, 1, 1, 1)):
    from embedcsp.ops import conv2d_general

    return conv2d_general(n, c, h, w, k, r, s, groups=groups, stride=stride, pads=pads)


@pytest.mark.parametrize("shape,groups,stride", [
    ((1, 8, 9, 9, 8, 3, 3), 8, (1, 1)),  # depthwise: one channel per group, 1 of 256 MACs useful
    ((2, 6, 7, 8, 9, 3, 3), 3, (2, 1)),  # grouped, batch 2, K/G = 3
    ((1, 64, 10, 10, 64, 3, 3), 16, (2, 2)),  # ResNeXt-like: 4 channels per group
    ((1, 64, 6, 7, 96, 3, 3), 2, (1, 1)),  # 32 in, 48 out per group: two and three blocks
])
def test_grouped_reference_is_the_fixed_conv_once_per_group(shape, groups, stride):
    n, c, h, w, k, r, s = shape
    op = _grouped(*shape, groups, stride)
    o = solve_and_verify(op, ACC, Options(strategy="reference"), seed=3)
    emb = o.compiled.embedding
    assert o.verification.ok and o.verification.checked == op.output.size
    assert emb.form == "direct" and emb.bound == {"inp": "data", "wgt": "weight", "acc": "out"}
    assert emb.group("red").dims == ("c",) and emb.group("col").dims == ("k",)
    assert [(lp.dim, lp.role) for lp in emb.loops_of("bat")] == [("g", "bat")]
    assert o.compiled.plan.n_bats == groups
    cg, kg = c // groups, k // groups
    p, q = op.extents["p"], op.extents["q"]
    assert emb.padded_macs == groups * n * p * q * r * s * 16 * math.ceil(cg / 16) * 16 * math.ceil(kg / 16)


def test_each_group_is_laid_out_as_the_ungrouped_reference_of_that_group():
    """Group b's slice of every region holds exactly what the ungrouped reference conv of group b
    alone holds: the grouped program is the fixed per-group conv, nothing else."""
    from embedcsp.pipeline import compile_operator
    from embedcsp.reference import random_inputs
    from embedcsp.targets.vta.codegen import dram_image

    n, c, h, w, k, groups = 2, 12, 7, 6, 18, 3
    op = _grouped(n, c, h, w, k, 3, 3, groups, (2, 1), (0, 1, 1, 0))
    one = _grouped(n, c // groups, h, w, k // groups, 3, 3, 1, (2, 1), (0, 1, 1, 0))
    grouped = compile_operator(op, ACC, Options(strategy="reference")).program
    single = compile_operator(one, ACC, Options(strategy="reference")).program
    inputs = random_inputs(op, 11)
    data = inputs["data"].reshape(n, groups, c // groups, h, w)
    weight = inputs["weight"].reshape(groups, k // groups, c // groups, 3, 3)
    image = dram_image(grouped, inputs)
    for name in ("inp", "wgt"):
        assert grouped.regions[name].size == groups * single.regions[name].size
    for b in range(groups):
        mine = dram_image(single, {"data": np.ascontiguousarray(data[:, b]), "weight": weight[b]})
        for name in ("inp", "wgt"):
            size = single.regions[name].size
            start = grouped.regions[name].offset + b * size
            ref = single.regions[name].offset
            np.testing.assert_array_equal(image[start:start + size], mine[ref:ref + size])


@pytest.mark.parametrize("shape,kw,border", [
    ((1, 16, 32, 32, 32, 3, 3), dict(stride=(2, 2), pads=(0, 1, 0, 1)), (0, 0)),  # Keras 'same', stride 2
    ((1, 1, 49, 10, 64, 10, 4), dict(stride=(2, 2), pads=(4, 5, 1, 1)), (0, 0)),  # DS-CNN's first conv
    ((1, 16, 6, 6, 16, 1, 1), dict(stride=(2, 2), pads=(0, 2, 0, 2)), (1, 1)),  # last window all padding
    ((1, 16, 4, 5, 16, 17, 17), dict(pads=(16, 0, 15, 0)), (16, 0)),  # beyond LOAD's 15 on top only
    ((1, 32, 6, 6, 32, 3, 3), dict(groups=2, stride=(2, 2), pads=(0, 1, 0, 1)), (0, 0)),  # grouped too
])
def test_asymmetric_padding_in_the_direct_form(shape, kw, border):
    from embedcsp.ops import conv2d_general

    n, c, h, w, *_ = shape
    op = conv2d_general(*shape, **kw)
    o = solve_and_verify(op, ACC, Options(strategy="reference"), seed=5)
    assert o.compiled.embedding.form == "direct"
    assert o.verification.ok and o.verification.checked == op.output.size
    data = next(t for t in o.transforms if t.tensor == "data")
    assert data.packed_bytes == n * 16 * math.ceil(c // kw.get("groups", 1) / 16) * kw.get("groups", 1) * (
        h + 2 * border[0]) * (w + 2 * border[1])


def test_conv_shape_reads_the_access_maps():
    from embedcsp.einsum import einsum
    from embedcsp.ops import conv2d_general
    from embedcsp.targets.vta.direct import ConvShape, conv_shape

    got = conv_shape(conv2d_general(2, 12, 9, 8, 6, 3, 2, groups=3, stride=(2, 3), pads=(1, 2, 0, 1)))
    assert got == ConvShape(N=2, G=3, C=4, K=2, H=9, W=8, R=3, S=2, P=5, Q=3, sh=2, sw=3, top=1, left=0)
    assert (got.bottom, got.right) == (1, 0)  # the last windows reach 1 of 2 rows and 0 of 1 column padded
    plain = conv_shape(conv2d(1, 3, 7, 7, 5, 3, 3, 1, 1, 1, 1))
    assert (plain.G, plain.top, plain.left, plain.bottom, plain.right) == (1, 1, 1, 1, 1)
    dilated = conv2d_general(1, 4, 9, 9, 4, 3, 3, dilation=(2, 1), pads=(2, 2, 1, 1))
    assert "dilated" in conv_shape(dilated) and direct_unsupported(dilated) == conv_shape(dilated)
    renamed = einsum("y[n,k,p,q] += x[n,c,p+r,q+s] * f[k,c,r,s]",
                     {"n": 1, "k": 4, "p": 3, "q": 3, "c": 4, "r": 2, "s": 2}, {"x": (1, 4, 4, 4)})
    assert "not a conv2d statement" in conv_shape(renamed)
    inside = einsum("out[n,k,p,q] += data[n,c,p+r+1,q+s] * weight[k,c,r,s]",
                    {"n": 1, "k": 4, "p": 3, "q": 3, "c": 4, "r": 2, "s": 2}, {"data": (1, 4, 5, 4)})
    assert "not those of a conv2d" in conv_shape(inside)  # a window that starts inside the image


def test_solver_reads_grouped_data_in_place_where_each_group_fills_the_lanes():
    """32 channels per group: the direct form costs no lanes and moves 9x fewer bytes than im2col."""
    op = _grouped(1, 64, 14, 14, 64, 3, 3, 2)
    o = solve_and_verify(op, ACC, Options(), seed=2)
    emb = o.compiled.embedding
    assert o.verification.ok and emb.form == "direct" and emb.efficiency == 1.0
    assert o.compiled.plan.n_bats == 2
    data = next(t for t in o.transforms if t.tensor == "data")
    assert data.packed_bytes == data.logical_bytes == 64 * 14 * 14


def test_grouped_reference_on_a_variant_with_batch_lanes():
    """BATCH=2, BLOCK_IN=8, BLOCK_OUT=32: the batch on BATCH within each group."""
    acc = load_accelerator(ISA / "vta_b2_i8_o32.toml")
    op = _grouped(3, 24, 6, 7, 40, 3, 3, 2, (1, 2))
    o = solve_and_verify(op, acc, Options(strategy="reference"), seed=1)
    emb = o.compiled.embedding
    assert o.verification.ok and emb.form == "direct" and emb.group("row").dims == ("n",)
    assert emb.padded_macs == 2 * 4 * 6 * 4 * 9 * 32 * 16  # n 3->4, c 12->16, k 20->32 per group
