"""The ground truth from access maps alone (embedcsp/truth.py): it agrees with the fast GEMM
and conv2d paths, with loops written out by hand, and it gives an operator whose maps say
more than its kind (a dilated conv labelled conv2d) its own semantics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from embedcsp import truth
from embedcsp.accelerator import load_accelerator
from embedcsp.operator import Dim, Operator, Tensor, conv2d, gemm, idx
from embedcsp.pipeline import Options, solve_and_verify
from embedcsp.reference import accumulate, random_inputs

VTA = load_accelerator()


def loops(op: Operator, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The statement executed point by point, in Python integers: the slowest, plainest truth."""
    out = np.zeros(op.output.shape, np.int64)
    names = [d.name for d in op.dims]
    a, b = op.inputs

    def read(t: Tensor, point: dict[str, int]) -> int:
        where = tuple(ix.evaluate(point) for ix in t.access)
        inside = all(0 <= i < n for i, n in zip(where, t.shape))
        return int(inputs[t.name][where]) if inside else 0

    for values in itertools.product(*(range(d.extent) for d in op.dims)):
        point = dict(zip(names, values))
        out[tuple(ix.evaluate(point) for ix in op.output.access)] += read(a, point) * read(b, point)
    return ((out + 2**31) % 2**32 - 2**31).astype(np.int32)


@pytest.mark.parametrize("op", [
    gemm(7, 5, 3), gemm(33, 17, 300), gemm(1, 1, 1),
    conv2d(1, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1), conv2d(2, 5, 9, 9, 3, 3, 2, 2, 0, 2, 3),
    conv2d(1, 4, 8, 8, 6, 1, 1, 0, 0, 2, 2), conv2d(1, 1, 5, 12, 2, 5, 5, 2, 2, 1, 1),
], ids=lambda op: op.describe())
def test_the_generic_truth_agrees_with_the_fast_paths(op):
    inputs = random_inputs(op, 3)
    want = accumulate(op, inputs)  # the fast path: the operator is canonical
    np.testing.assert_array_equal(truth.accumulate(op, inputs), want)


def test_the_fast_paths_agree_with_loops_on_small_shapes():
    for op in (gemm(4, 3, 5), conv2d(1, 2, 5, 4, 3, 3, 2, 1, 1, 2, 1)):
        inputs = random_inputs(op, 5)
        np.testing.assert_array_equal(accumulate(op, inputs), loops(op, inputs))


def dilated(kind: str = "conv2d") -> Operator:
    """A 3x3 conv with dilation 2 and pad 2, built by hand, labelled with a kind."""
    n, c, h, w, k = 1, 3, 7, 7, 4
    return Operator(kind, conv2d(n, c, h, w, k, 3, 3, 2, 2).params,
                    (Dim("n", n), Dim("k", k), Dim("p", 7), Dim("q", 7), Dim("c", c), Dim("r", 3), Dim("s", 3)), (
        Tensor("data", "input", (n, c, h, w), (idx("n"), idx("c"), idx("p", ("r", 2), const=-2),
                                               idx("q", ("s", 2), const=-2))),
        Tensor("weight", "input", (k, c, 3, 3), (idx("k"), idx("c"), idx("r"), idx("s"))),
        Tensor("out", "output", (n, k, 7, 7), (idx("n"), idx("k"), idx("p"), idx("q")))))


def test_a_dilated_conv_labelled_conv2d_gets_its_own_semantics():
    op = dilated()
    inputs = random_inputs(op, 1)
    got = accumulate(op, inputs)
    np.testing.assert_array_equal(got, loops(op, inputs))
    plain = conv2d(1, 3, 7, 7, 4, 3, 3, 2, 2)
    assert not np.array_equal(got[:, :, :5, :5], accumulate(plain, inputs)[:, :, 1:6, 1:6])


def test_a_dilated_conv_compiles_to_what_its_maps_say():
    """The issue's case: such an operator used to compile as an undilated conv and verify
    against the undilated truth. Now the direct form stands aside and the check is the maps'."""
    o = solve_and_verify(dilated(), VTA, Options(time_limit=5), seed=2)
    assert o.compiled.embedding.form == "matrix" and o.verification.ok


def test_grouped_and_batched_statements_against_loops():
    g, ci, co = 2, 3, 2  # a grouped 1-D conv: out[g,o,p] += data[g,i,p+r-1] * w[g,o,i,r]
    grouped = Operator("grouped", (("G", g),), (Dim("g", g), Dim("o", co), Dim("p", 5), Dim("i", ci), Dim("r", 3)), (
        Tensor("data", "input", (g, ci, 5), (idx("g"), idx("i"), idx("p", "r", const=-1))),
        Tensor("w", "input", (g, co, ci, 3), (idx("g"), idx("o"), idx("i"), idx("r"))),
        Tensor("out", "output", (g, co, 5), (idx("g"), idx("o"), idx("p")))))
    bmm = Operator("bmm", (("B", 3),), (Dim("b", 3), Dim("m", 4), Dim("n", 5), Dim("k", 6)), (
        Tensor("A", "input", (3, 4, 6), (idx("b"), idx("m"), idx("k"))),
        Tensor("B", "input", (3, 6, 5), (idx("b"), idx("k"), idx("n"))),
        Tensor("C", "output", (3, 4, 5), (idx("b"), idx("m"), idx("n")))))
    for op in (grouped, bmm):
        inputs = random_inputs(op, 4)
        np.testing.assert_array_equal(truth.accumulate(op, inputs), loops(op, inputs))
    inputs = random_inputs(bmm, 4)
    np.testing.assert_array_equal(truth.accumulate(bmm, inputs),
                                  np.matmul(inputs["A"].astype(np.int64), inputs["B"].astype(np.int64)))


def test_long_reductions_are_cut_and_stay_exact(monkeypatch):
    monkeypatch.setattr(truth, "_EXACT_TERMS", 7)  # force many slices of the reduction
    op = gemm(5, 4, 50)
    inputs = random_inputs(op, 6)
    np.testing.assert_array_equal(truth.accumulate(op, inputs), loops(op, inputs))


def test_the_gemm_fast_path_stays_exact_where_float32_would_round():
    """Same-signed operands make partial sums pass 2^24 (float32's last exact integer) within a
    few hundred terms; the float32 slices of at most 1024 terms must still give the exact sum,
    and past 2^31 its int32 wrap."""
    rng = np.random.default_rng(8)
    for m, n, k in ((6, 5, 3000), (2, 3, 140_000)):  # 140000 x 128 x 128 > 2^31
        a = rng.integers(-128, -90, size=(m, k)).astype(np.int8) | np.int8(1)  # odd: no spare low bits
        b = rng.integers(-128, -90, size=(k, n)).astype(np.int8) | np.int8(1)
        a[0], b[:, 0] = -128, -128
        exact = a.astype(np.int64) @ b.astype(np.int64)
        assert exact.min() > 2**24 and exact[0, 0] == k * 128 * 128
        wrapped = ((exact + 2**31) % 2**32 - 2**31).astype(np.int32)
        np.testing.assert_array_equal(accumulate(gemm(m, n, k), {"A": a, "B": b}), wrapped)
        # the slicing is what keeps it exact: one float32 product over all of K rounds
        whole = (a.astype(np.float32) @ b.astype(np.float32)).astype(np.int64)
        assert (whole != exact).any()
    assert exact[0, 0] > 2**31 and wrapped[0, 0] < 0


def test_a_bundle_never_records_an_operator_its_reader_would_rebuild_differently(tmp_path):
    from embedcsp import BadInput, write_bundle
    from embedcsp.pipeline import compile_operator

    compiled = compile_operator(dilated(), VTA, Options(time_limit=5))
    with pytest.raises(BadInput, match="access maps say something else"):
        write_bundle(compiled, tmp_path / "b", random_inputs(dilated(), 0))
