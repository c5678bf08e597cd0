"""The cycle model decides among the solver's best, its near-optimal alternatives and the
reference (docs/choice.md): ours is never slower than the reference, by construction."""

from __future__ import annotations

from dataclasses import replace

import pytest

from embedcsp.accelerator import load_accelerator
from embedcsp.csp import solve_alternatives, solve_embedding
from embedcsp.errors import NoEmbedding
from embedcsp.operator import conv2d, gemm
from embedcsp.ops import bmm
from embedcsp.pipeline import Options, compile_operator
from embedcsp.targets.registry import family

VTA = load_accelerator()

OPERATORS = [
    gemm(35, 700, 2048),
    gemm(96, 160, 512),  # both bindings pad the same: only cycles tell them apart
    gemm(3, 1000, 300),
    conv2d(1, 3, 40, 40, 32, 3, 3, 1, 1, 1, 1),
    conv2d(1, 32, 14, 14, 32, 3, 3, 1, 1, 1, 1),
    conv2d(1, 64, 14, 14, 64, 1, 1, 0, 0, 2, 2),
    bmm(4, 40, 24, 70),
]


@pytest.mark.parametrize("op", OPERATORS, ids=lambda op: op.describe())
def test_ours_is_never_slower_than_the_reference(op):
    fam = family("vta")
    ours = compile_operator(op, VTA, Options())
    ref = compile_operator(op, VTA, Options(strategy="reference"))
    assert fam.cost(ours).cycles <= fam.cost(ref).cycles
    # The pool: the solver's best first, the reference last, the chosen one the fastest.
    sources = [c.source for c in ours.candidates]
    assert sources[0] == "solver" and sources[-1] == "reference"
    costed = [c for c in ours.candidates if c.cycles is not None]
    chosen = next(c for c in costed if c.embedding == ours.embedding.brief())
    assert chosen.cycles == min(c.cycles for c in costed) == fam.cost(ours).cycles
    reference = ours.candidates[-1]
    assert reference.embedding == ref.embedding.brief() and reference.cycles == fam.cost(ref).cycles


def test_alternatives_are_distinct_and_within_the_slack():
    op = conv2d(1, 64, 28, 28, 64, 3, 3, 1, 1, 1, 1)
    best, report = solve_embedding(op, VTA)
    alts = solve_alternatives(op, VTA, best, report, 4, 0.02, 5.0)
    briefs = [best.brief()] + [e.brief() for e, _ in alts]
    assert len(alts) == 4 and len(set(briefs)) == 5
    assert all(e.padded_macs <= report.objective * 1.02 for e, _ in alts)
    # Each is the lexicographic best of what is left: padded MACs never decrease along the list.
    padded = [best.padded_macs] + [e.padded_macs for e, _ in alts]
    assert padded == sorted(padded)


def test_an_extent_one_dim_does_not_make_a_new_alternative():
    """gemm M=35: on default VTA BATCH is 1 lane wide, so m on it is m as a loop."""
    op = gemm(35, 700, 2048)
    best, report = solve_embedding(op, VTA)
    for emb, _ in solve_alternatives(op, VTA, best, report, 4, 0.02, 5.0):
        assert emb.brief().split("|")[1] != best.brief().split("|")[1] or emb.bound != best.bound


def test_no_alternative_left_is_the_end_of_the_enumeration():
    op = gemm(16, 16, 16)
    best, report = solve_embedding(op, VTA)
    with pytest.raises(NoEmbedding):
        solve_embedding(op, VTA, exclude=(best,), max_padded_macs=report.objective - 1)


def test_without_alternatives_the_pool_is_the_best_and_the_reference():
    op = gemm(96, 160, 512)
    compiled = compile_operator(op, VTA, Options(alternatives=0))
    assert [c.source for c in compiled.candidates] == ["solver", "reference"]
    faster = min(c.cycles for c in compiled.candidates)
    assert family("vta").cost(compiled).cycles == faster


def test_gemmini_is_never_slower_than_its_library_mapping():
    gem = load_accelerator("isa/gemmini.toml")
    fam = family("gemmini")
    for op in (gemm(40, 70, 64), gemm(3, 200, 48)):
        ours = compile_operator(op, gem, Options())
        ref = compile_operator(op, gem, replace(Options(), strategy="reference"))
        assert fam.cost(ours).cycles <= fam.cost(ref).cycles
        assert ours.candidates[-1].source == "reference"


def test_a_family_without_a_fast_model_has_each_candidate_built_and_costed():
    tile = load_accelerator("isa/tile_mma_16x8x16.toml")
    fam = family("tile")
    assert not hasattr(fam, "modelled_cycles") and fam.reference is None
    compiled = compile_operator(gemm(64, 64, 64), tile, Options())  # both bindings pad alike
    assert compiled.candidates[0].source == "solver" and len(compiled.candidates) >= 2
    costed = [c.cycles for c in compiled.candidates if c.cycles is not None]
    assert fam.cost(compiled).cycles == min(costed)
