"""Solver hygiene: time limits, reproducibility, and embeddings that cannot exist."""

from __future__ import annotations

import pytest

from embedcsp.accelerator import load_accelerator
from embedcsp.csp import solve_embedding
from embedcsp.embedding import Loop, check_scalar
from embedcsp.errors import BadInput, NoEmbedding, SolverTimeout
from embedcsp.operator import Dim, Operator, Tensor, gemm, idx
from embedcsp.pipeline import Options, solve_and_verify

ACC = load_accelerator()


def test_time_limit_with_nothing_found_is_a_timeout():
    with pytest.raises(SolverTimeout, match="raise --time-limit"):
        solve_embedding(gemm(35, 700, 2048), ACC, time_limit=1e-6)


def test_every_level_is_optimal_with_a_proven_bound():
    _, report = solve_embedding(gemm(512, 6000, 2048), ACC)
    assert report.status == "OPTIMAL"
    assert [name for name, *_ in report.levels] == ["padded_macs", "packed_bytes", "tie_break"]
    for _, status, value, bound in report.levels:
        assert status == "OPTIMAL" and value == bound
    assert report.levels[1][2] == 512 * 2048 + 6000 * 2048 + 512 * 6000  # packed bytes, exactly


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_same_answer_for_every_seed(seed):
    ref, _ = solve_embedding(gemm(48, 48, 48), ACC, seed=0)
    emb, _ = solve_embedding(gemm(48, 48, 48), ACC, seed=seed)
    assert emb.summary() == ref.summary()


def test_operator_with_one_input_cannot_embed():
    op = Operator("copy", (("M", 4),), (Dim("m", 4),),
                  (Tensor("X", "input", (4,), (idx("m"),)), Tensor("Y", "output", (4,), (idx("m"),))))
    with pytest.raises(NoEmbedding, match="multiplies exactly two"):
        solve_embedding(op, ACC)


def test_dim_used_by_all_three_tensors_is_a_batch_loop():
    """A batched GEMM's batch dim indexes A, B and C: no lane of VTA can carry it, so it is a loop
    along the batch axis, which VTA's program runs once per batch element."""
    op = Operator("bmm", (("B", 2),), (Dim("b", 2), Dim("m", 4), Dim("n", 4), Dim("k", 4)), (
        Tensor("A", "input", (2, 4, 4), (idx("b"), idx("m"), idx("k"))),
        Tensor("B", "input", (2, 4, 4), (idx("b"), idx("k"), idx("n"))),
        Tensor("C", "output", (2, 4, 4), (idx("b"), idx("m"), idx("n")))))
    emb, _ = solve_embedding(op, ACC, 5.0)
    assert Loop("b", 2, "bat") in emb.loops and emb.classes == ("row", "col", "red", "bat")
    check_scalar(emb)  # every MAC once, the dataflow kept
    o = solve_and_verify(op, ACC, Options(time_limit=5, placements=False), seed=3)
    assert o.verification.ok and o.compiled.plan.n_bats == 2
    # Among placements beyond whole dims, two batches may share the lanes block-diagonally.
    o = solve_and_verify(op, ACC, Options(time_limit=5), seed=3)
    assert o.verification.ok and o.timing.cycles <= min(c.cycles for c in o.compiled.candidates if c.cycles)


def test_absurd_sizes_are_bad_input():
    with pytest.raises(BadInput):
        gemm(1 << 25, 1, 1)
    with pytest.raises(BadInput, match="too large"):
        solve_embedding(gemm(1 << 24, 1 << 24, 1 << 24), ACC)
