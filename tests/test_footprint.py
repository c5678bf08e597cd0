"""The roofline's memory side (embedcsp/footprint.py) against a brute force over every
iteration point, written here from the definition: an input element counts when some product
reads it in bounds with an in-bounds partner."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from embedcsp.einsum import einsum
from embedcsp.footprint import footprint
from embedcsp.operator import conv2d, gemm
from embedcsp.ops import bmm, conv2d_general


def brute_force(op) -> dict[str, int]:
    names = [d.name for d in op.dims]
    seen = {t.name: set() for t in op.inputs}
    for point in itertools.product(*(range(d.extent) for d in op.dims)):
        coords = dict(zip(names, point))
        where = {t.name: tuple(int(ix.evaluate(coords)) for ix in t.access) for t in op.inputs}
        if all(all(0 <= v < n for v, n in zip(where[t.name], t.shape)) for t in op.inputs):
            for t in op.inputs:
                seen[t.name].add(where[t.name])
    return {name: len(found) for name, found in seen.items()}


CASES = [
    gemm(5, 7, 3),
    conv2d(1, 3, 9, 9, 2, 3, 3, 1, 1, 1, 1),
    conv2d(2, 2, 8, 7, 3, 1, 1, 0, 0, 2, 2),  # 1x1 stride 2 reads a quarter of the input
    conv2d(1, 1, 5, 5, 4, 3, 3, 0, 0, 3, 3),  # windows that leave a row and a column out
    conv2d(1, 2, 4, 4, 2, 5, 5, 2, 2, 1, 1),  # pads on all sides, filter as large as the image
    conv2d_general(1, 4, 9, 9, 4, 3, 3, groups=2, dilation=(2, 2), pads=(2, 1, 0, 3), stride=(2, 1)),
    conv2d_general(1, 3, 7, 6, 3, 3, 3, groups=3, dilation=(1, 2), pads=(1, 1, 1, 1), stride=(1, 1)),
    bmm(3, 4, 5, 6),
    einsum("y[i] += x[2*i+j-1] * w[j]", {"i": 6, "j": 3}, {"x": (12,)}),  # a strided 1-D correlation, left pad
    einsum("y[i] += x[i+j] * w[i-j+2]", {"i": 4, "j": 5}, {"x": (6,), "w": (5,)}),  # both inputs share dims
]


@pytest.mark.parametrize("op", CASES, ids=lambda op: op.describe())
def test_footprint_equals_a_brute_force(op):
    fp = footprint(op)
    assert dict(fp.read) == brute_force(op)
    assert fp.written == op.output.size


def test_strided_and_dilated_reads_are_what_the_windows_touch():
    # 1x1 stride 2 on 56x56: 28x28 of each of 64 channels.
    assert footprint(conv2d(1, 64, 56, 56, 128, 1, 1, 0, 0, 2, 2)).of("data") == 64 * 28 * 28
    # 3x3 dilation 2, no padding, 11 wide: taps at 0, 2, 4 of 7 output positions read every column.
    op = conv2d_general(1, 1, 11, 11, 1, 3, 3, dilation=(2, 2))
    assert footprint(op).of("data") == 11 * 11
    # dilation 3 with stride 3 and a 3-tap filter on 9: p=1, taps 0, 3, 6 only.
    op = conv2d_general(1, 1, 9, 9, 1, 3, 3, dilation=(3, 3), stride=(3, 3))
    assert footprint(op).of("data") == 9


def test_random_convs_agree_with_the_brute_force():
    rng = np.random.default_rng(5)
    for _ in range(12):
        h, w = (int(v) for v in rng.integers(3, 9, 2))
        r, s = int(rng.integers(1, min(h, 4) + 1)), int(rng.integers(1, min(w, 4) + 1))
        op = conv2d_general(1, 2, h, w, 2, r, s, dilation=(1, int(rng.integers(1, 3))),
                            pads=tuple(int(p) for p in rng.integers(0, 3, 4)),
                            stride=tuple(int(v) for v in rng.integers(1, 4, 2)))
        assert dict(footprint(op).read) == brute_force(op), op.describe()
