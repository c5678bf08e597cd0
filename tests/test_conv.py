"""conv2d end to end: the solver's embedding, the compiled program, bit-exact results.

Shapes are small versions of the DeepBench families (same filters, strides,
paddings and channel counts where they matter), so each runs in well under a
second; tests/test_deepbench_conv.py-style full sweeps live in scripts/.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedcsp.accelerator import load_accelerator
from embedcsp.bundle import read_bundle, run_bundle, write_bundle
from embedcsp.csp import solve_embedding
from embedcsp.embedding import check_scalar
from embedcsp.errors import BadInput
from embedcsp.operator import conv2d
from embedcsp.pipeline import Options, solve_and_verify
from embedcsp.reference import Epilogue, accumulate, random_inputs

ACC = load_accelerator()


def _naive_conv(data, weight, ph, pw, sh, sw):
    """Plain loops, independent of embedcsp.reference."""
    n, c, h, w = data.shape
    k, _, r, s = weight.shape
    p = (h + 2 * ph - r) // sh + 1
    q = (w + 2 * pw - s) // sw + 1
    out = np.zeros((n, k, p, q), np.int64)
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), np.int64)
    padded[:, :, ph:ph + h, pw:pw + w] = data
    for pp in range(p):
        for qq in range(q):
            window = padded[:, :, pp * sh:pp * sh + r, qq * sw:qq * sw + s]  # n c r s
            out[:, :, pp, qq] = np.einsum("ncrs,kcrs->nk", window, weight.astype(np.int64))
    return out.astype(np.int32)


CASES = {
    # name: (n, c, h, w, k, r, s, pad_h, pad_w, stride_h, stride_w)
    "stride2_c3_3x3": (1, 3, 15, 13, 64, 3, 3, 1, 1, 2, 2),
    "pad3_7x7_stride2": (1, 3, 20, 18, 16, 7, 7, 3, 3, 2, 2),
    "1x1_stride2": (1, 64, 14, 14, 32, 1, 1, 0, 0, 2, 2),
    "20x5_filter_c1": (1, 1, 16, 60, 32, 5, 20, 0, 0, 2, 2),
    "k48_5x5": (1, 32, 9, 9, 48, 5, 5, 2, 2, 1, 1),
    "batch2_3x3": (2, 16, 10, 12, 32, 3, 3, 1, 1, 1, 1),
    "k_not_16_multiple": (1, 8, 7, 7, 20, 3, 3, 1, 1, 1, 1),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_conv_verified_bit_exact(name):
    shape = CASES[name]
    op = conv2d(*shape)
    outcome = solve_and_verify(op, ACC, Options(time_limit=10), seed=3)
    v = outcome.verification
    assert v.ok and v.mismatches == 0 and v.checked == op.output.size
    # The numpy reference itself agrees with plain loops.
    inputs = random_inputs(op, 3)
    n, c, h, w, k, r, s, ph, pw, sh, sw = shape
    expected = _naive_conv(inputs["data"], inputs["weight"], ph, pw, sh, sw)
    np.testing.assert_array_equal(accumulate(op, inputs), expected)


def test_conv_requant_epilogue():
    op = conv2d(1, 3, 12, 12, 16, 3, 3, 1, 1, 1, 1)
    outcome = solve_and_verify(op, ACC, Options(epilogue=Epilogue("requant", 9)), seed=5)
    assert outcome.verification.ok


@pytest.mark.parametrize("c,r,s", [(1, 5, 20), (3, 3, 3), (3, 7, 7), (1, 3, 3), (1, 5, 5)])
def test_small_channel_layers_reach_the_lane_bound(c, r, s):
    """C=1 and C=3 layers: BLOCK_IN lanes take the whole (c, r, s) reduction, im2col style."""
    op = conv2d(1, c, 40, 40, 32, r, s, 0, 0, 2, 2)
    emb, report = solve_embedding(op, ACC)
    crs = c * r * s
    assert report.status == "OPTIMAL" and report.objective == report.bound
    assert emb.efficiency == pytest.approx(crs / (16 * math.ceil(crs / 16)))
    red = emb.group("red")
    assert red.fused == crs  # every tap and channel on the reduction lanes
    assert emb.group("col").dims == ("k",)


def test_wide_channel_layer_keeps_channels_on_the_reduction_lanes():
    emb, _ = solve_embedding(conv2d(1, 64, 14, 14, 128, 3, 3, 1, 1, 1, 1), ACC)
    assert emb.efficiency == 1.0
    assert emb.group("red").fused % 16 == 0
    assert "c" in emb.group("red").dims


@pytest.mark.parametrize("shape", [(1, 3, 9, 9, 16, 3, 3, 1, 1, 2, 2), (2, 1, 8, 20, 16, 5, 20, 0, 0, 2, 2)])
def test_scalar_dataflow_of_conv_embeddings(shape):
    emb, _ = solve_embedding(conv2d(*shape), ACC)
    check_scalar(emb)  # every instance, exact cover


def test_conv_bundle_reruns_with_fresh_inputs(tmp_path):
    op = conv2d(1, 3, 11, 11, 24, 3, 3, 1, 1, 2, 2)
    outcome = solve_and_verify(op, ACC, Options(), seed=0)
    write_bundle(tmp_path, outcome.compiled, outcome.inputs, 0, outcome.verification, outcome.transforms)
    bundle = read_bundle(tmp_path)
    for seed in (1, 2):
        assert run_bundle(bundle, seed).ok
    # The host transform is im2col: each input pixel is duplicated.
    data = next(t for t in outcome.transforms if t.tensor == "data")
    assert data.duplication > 1


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(r=9, s=3, h=4, w=8, pad_h=1, pad_w=0), "larger than the padded"),
    (dict(stride_h=0), "stride_h must be at least 1"),
    (dict(pad_w=-1), "pad_w must be a whole number >= 0"),
    (dict(c=0), "C must be at least 1"),
])
def test_conv_bad_shapes(kwargs, fragment):
    args = dict(n=1, c=3, h=8, w=8, k=16, r=3, s=3, pad_h=1, pad_w=1, stride_h=1, stride_w=1)
    args.update(kwargs)
    with pytest.raises(BadInput, match=fragment):
        conv2d(**args)
