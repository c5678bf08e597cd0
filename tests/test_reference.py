"""The reference strategy is VTA's fixed TVM layout: M and K padded to 16, N on the rows.

conv2d's reference (NCHW16c read in place) is tested in test_direct.py.
"""

from __future__ import annotations

import math

import pytest

from embedcsp.accelerator import load_accelerator
from embedcsp.operator import gemm
from embedcsp.pipeline import Options, solve_and_verify

ACC = load_accelerator()


@pytest.mark.parametrize("m,n,k", [(35, 700, 64), (17, 3, 33), (64, 1, 1216), (100, 20, 40)])
def test_reference_padding_matches_the_fixed_layout(m, n, k):
    o = solve_and_verify(gemm(m, n, k), ACC, Options(strategy="reference"), seed=2)
    emb = o.compiled.embedding
    assert o.verification.ok
    assert emb.bound == {"inp": "B", "wgt": "A", "acc": "C"}
    assert emb.group("col").dims == ("m",) and emb.group("red").dims == ("k",)
    padded = n * 16 * math.ceil(m / 16) * 16 * math.ceil(k / 16)
    assert emb.padded_macs == padded
    assert emb.efficiency == pytest.approx(m * k / (16 * math.ceil(m / 16) * 16 * math.ceil(k / 16)))


def test_solver_beats_reference_where_the_fixed_layout_pads():
    op = gemm(35, 700, 256)
    ours = solve_and_verify(op, ACC, Options(), seed=0)
    ref = solve_and_verify(op, ACC, Options(strategy="reference"), seed=0)
    assert ours.compiled.embedding.efficiency > 0.99 > 0.73 > ref.compiled.embedding.efficiency
    assert ours.timing.cycles < ref.timing.cycles
