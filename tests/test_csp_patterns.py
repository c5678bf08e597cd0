"""The CSP on instructions other than VTA's: it reads operand names and dim roles from the
pattern, and its padding objective matches a brute force over every whole-dim placement."""

from __future__ import annotations

from itertools import product

import pytest

from embedcsp.accelerator import Accelerator
from embedcsp.csp import ROLES, solve_embedding
from embedcsp.embedding import Embedding, LaneGroup, Loop, check_scalar
from embedcsp.errors import NoEmbedding
from embedcsp.operator import Operator, conv2d, gemm
from embedcsp.pattern import Operand, Pattern, parse_pattern

PATTERNS = {
    "mma-16x8x16": ("c[m,n] += a[m,k] * b[k,n]", {"m": 16, "n": 8, "k": 16}),
    "mma-8x8x32": ("c[m,n] += a[m,k] * b[k,n]", {"m": 8, "n": 8, "k": 32}),
    "matvec-16x16": ("y[m] += A[m,k] * x[k]", {"m": 16, "k": 16}),
    "dot-4": ("z[u] += x[u,k] * y[k]", {"u": 1, "k": 4}),
}
OPERATORS = {
    "gemm 35x20x50": gemm(35, 20, 50),
    "gemm 7x3x100": gemm(7, 3, 100),
    "conv C=3 3x3": conv2d(1, 3, 6, 6, 5, 3, 3, 1, 1, 1, 1),
}


def accelerator(name: str) -> Accelerator:
    statement, lanes = PATTERNS[name]
    return Accelerator(name, "test", parse_pattern(statement, lanes), None, "test")


def brute_force_padding(op: Operator, acc: Accelerator) -> int:
    """The fewest issued MACs over every binding and every whole-dim placement (each operator
    dim on one lane class, in operator order, or a loop) that the scalar check accepts."""
    first, second = (q.name for q in acc.pattern.inputs)
    dim_of = {r: d for d, r in acc.role_of.items()}
    lanes = {r: acc.pattern.extents[dim_of[r]] if r in dim_of else 1 for r in ROLES}
    best = None
    for tensors in ((op.inputs[0].name, op.inputs[1].name), (op.inputs[1].name, op.inputs[0].name)):
        binding = ((first, tensors[0]), (second, tensors[1]), (acc.pattern.output.name, op.output.name))
        for places in product((*ROLES, "loop"), repeat=len(op.dims)):
            if any(p != "loop" and p not in dim_of for p in places):
                continue
            groups = tuple(LaneGroup(r, lanes[r], tuple(d.name for d, p in zip(op.dims, places) if p == r),
                                     tuple(d.extent for d, p in zip(op.dims, places) if p == r))
                           for r in ROLES)
            loops = tuple(Loop(d.name, d.extent, "red" if d.name not in op.output.dims else
                               "row" if d.name in op.tensor(tensors[0]).dims else "col")
                          for d, p in zip(op.dims, places) if p == "loop")
            emb = Embedding(op, acc, binding, groups, loops)
            if best is not None and emb.padded_macs >= best:
                continue
            try:
                check_scalar(emb)
            except AssertionError:
                continue
            best = emb.padded_macs
    assert best is not None
    return best


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@pytest.mark.parametrize("operator", sorted(OPERATORS))
def test_padding_is_the_best_whole_dim_placement(pattern, operator):
    op, acc = OPERATORS[operator], accelerator(pattern)
    emb, report = solve_embedding(op, acc, time_limit=10, forms=())
    check_scalar(emb)  # every MAC covered once, dataflow kept, at full expansion
    assert report.status == "OPTIMAL"
    assert emb.padded_macs == report.objective == brute_force_padding(op, acc)
    names = {q for q, _ in emb.binding}
    assert names == {o.name for o in acc.pattern.operands}  # the pattern's own operand names


def test_the_report_names_the_instructions_own_dims():
    emb, _ = solve_embedding(gemm(35, 20, 50), accelerator("mma-16x8x16"), forms=())
    text = "\n".join(emb.describe())
    assert "m lanes (16)" in text and "k lanes (16)" in text and "layout: the host packs a" in text


def test_batched_instruction_dims_are_refused_with_a_reason():
    p = Pattern(Operand("acc", ("g", "o")), (Operand("inp", ("g", "i")), Operand("wgt", ("g", "o", "i"))),
                (("g", 4), ("o", 4), ("i", 4)))
    acc = Accelerator("grouped", "test", p, None, "test")
    with pytest.raises(NoEmbedding, match="index all three operands"):
        solve_embedding(gemm(8, 8, 8), acc, forms=())
