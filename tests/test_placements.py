"""Placements beyond whole dims (embedcsp/placements/): each statement means the operator,
its programs verify bit-exactly, and the cycle model takes one where it wins."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from embedcsp.accelerator import load_accelerator
from embedcsp.operator import conv2d, gemm
from embedcsp.ops.conv import conv2d_general
from embedcsp.pipeline import Options, solve_and_verify
from embedcsp.placements import placements
from embedcsp.placements.banded import banded
from embedcsp.placements.block_diagonal import block_diagonal
from embedcsp.reference import random_inputs
from embedcsp.truth import accumulate

VTA = load_accelerator()


def brute_force(op, inputs) -> np.ndarray:
    """int64 sums over every point of op's domain, one point at a time: reads outside an
    input are zero, writes outside the output are dropped (what a placement relies on)."""
    ext = op.extents
    out = np.zeros(op.output.shape, np.int64)
    a, b = op.inputs
    for point in itertools.product(*(range(e) for e in ext.values())):
        at = dict(zip(ext, point))

        def index(t):
            return tuple(int(ix.evaluate(at)) for ix in t.access)

        def inside(t, i):
            return all(0 <= v < n for v, n in zip(i, t.shape))

        o = index(op.output)
        ia, ib = index(a), index(b)
        if inside(op.output, o) and inside(a, ia) and inside(b, ib):
            out[o] += int(inputs[a.name][ia]) * int(inputs[b.name][ib])
    return out


SMALL = [
    conv2d(1, 2, 7, 9, 3, 3, 3, 1, 1, 1, 1),
    conv2d(1, 1, 9, 11, 2, 3, 3, 1, 1, 2, 2),
    conv2d(2, 1, 6, 6, 2, 2, 2, 0, 0, 1, 1),
    conv2d_general(1, 4, 8, 10, 4, 3, 3, groups=4, pads=(1, 1, 1, 1)),
    conv2d_general(1, 3, 9, 9, 3, 3, 3, groups=3, stride=(2, 2), pads=(0, 1, 2, 1)),
]


GROUPED = [
    conv2d_general(1, 8, 6, 7, 8, 3, 3, groups=4, pads=(1, 1, 1, 1)),
    conv2d_general(2, 6, 5, 5, 6, 3, 3, groups=6, stride=(2, 2), pads=(1, 0, 1, 0)),
    conv2d_general(1, 12, 6, 6, 6, 1, 1, groups=3),
]


@pytest.mark.parametrize("find, op", [(banded, op) for op in SMALL] + [(block_diagonal, op) for op in GROUPED],
                         ids=lambda x: x.describe() if hasattr(x, "describe") else x.__name__)
def test_each_placement_statement_means_the_operator(find, op):
    found = find(op, VTA)
    assert found, "a conv with unit dilation has a window to band; a grouped conv has groups to share"
    inputs = random_inputs(op, 3)
    want = brute_force(op, inputs)
    assert np.array_equal(accumulate(op, inputs).astype(np.int64), want)
    for placement in found:
        rewritten = placement.operator
        assert rewritten.macs > op.macs  # the extra points read zeros or write nowhere
        # Each tensor is a view of the same bytes: an axis split, an extent-1 axis added.
        for t in rewritten.tensors:
            assert t.size == op.tensor(t.name).size
        views = {t.name: inputs[t.name].reshape(rewritten.tensor(t.name).shape) for t in rewritten.inputs}
        assert np.array_equal(brute_force(rewritten, views).reshape(op.output.shape), want), placement.note


def test_block_diagonal_blocks_fill_the_lanes():
    resnext = conv2d_general(1, 128, 56, 56, 128, 3, 3, groups=32, pads=(1, 1, 1, 1))
    for p in block_diagonal(resnext, VTA):
        assert p.operator.extents["g_out"] == p.operator.extents["g_in"] == 4  # 4 groups x 4 channels = 16 lanes
    depthwise = conv2d_general(1, 144, 56, 56, 144, 3, 3, groups=144, pads=(1, 1, 1, 1))
    assert {p.operator.extents["g_out"] for p in block_diagonal(depthwise, VTA)} == {16}  # 16 divides 144
    prime = conv2d_general(1, 17, 8, 8, 17, 3, 3, groups=17, pads=(1, 1, 1, 1))
    assert block_diagonal(prime, VTA) == []  # 17 groups: no block of them fits 16 lanes
    assert block_diagonal(conv2d(1, 16, 8, 8, 16, 3, 3, 1, 1), VTA) == []  # no groups


def test_the_resnext_layer_shares_lanes_block_diagonally_in_the_direct_form():
    """ResNeXt-50 32x4d's grouped 3x3 layer: four groups per instruction, the data read once in
    its channel-blocked order, against 0.75 of the lanes with the data's windows duplicated."""
    op = conv2d_general(1, 128, 56, 56, 128, 3, 3, groups=32, pads=(1, 1, 1, 1))
    out = solve_and_verify(op, VTA, Options(time_limit=20), seed=2)
    c = out.compiled
    assert out.verification.ok and out.verification.checked == op.output.size
    assert c.form == "block-diagonal" and c.embedding.form == "direct"
    assert c.efficiency == 0.25
    data = next(t for t in out.transforms if t.tensor == "data")
    assert data.duplication == 1.0 and data.packed_bytes == data.logical_bytes
    solver = next(cand for cand in c.candidates if cand.source == "solver")
    assert op.macs / solver.padded_macs == 0.75  # the best whole-dim placement
    assert out.timing.cycles < solver.cycles / 2


def test_the_band_fills_the_reduction_lanes():
    op = conv2d_general(1, 32, 112, 112, 32, 3, 3, groups=32, pads=(1, 1, 1, 1))
    by_axis = {p.operator.statement(): p for p in banded(op, VTA)}
    assert len(by_axis) == 2  # rows (p, r) and columns (q, s)
    for p in by_axis.values():
        ext = p.operator.extents
        tile, out, win = (d for d in ext if d.endswith(("_tile", "_out", "_in")))
        assert (ext[out], ext[win], ext[tile]) == (14, 16, 8)  # 14 outputs read 16 columns; 8 x 14 >= 112
    strided = conv2d(1, 1, 224, 224, 16, 3, 3, 1, 1, 2, 2)
    for p in banded(strided, VTA):
        ext = p.operator.extents
        assert sorted(v for d, v in ext.items() if d.endswith(("_out", "_in"))) == [7, 15]  # 2*(7-1)+3


def test_no_band_without_a_window():
    assert placements(gemm(64, 64, 64), VTA) == []
    dilated = conv2d_general(1, 16, 20, 20, 16, 3, 3, dilation=(2, 2), pads=(2, 2, 2, 2))
    assert banded(dilated, VTA) == []  # the taps are not consecutive columns


@pytest.mark.parametrize("args, stride", [((1, 32, 112, 112, 32), (1, 1)), ((1, 96, 112, 112, 96), (2, 2)),
                                          ((1, 192, 28, 28, 192), (1, 1))],
                         ids=["dw32-s1-112", "dw96-s2-112", "dw192-s1-28"])
def test_depthwise_layers_take_a_placement_beyond_whole_dims_and_verify(args, stride):
    n, c, h, w, k = args
    op = conv2d_general(n, c, h, w, k, 3, 3, groups=c, stride=stride, pads=(1, 1, 1, 1))
    out = solve_and_verify(op, VTA, Options(time_limit=20), seed=5)
    compiled = out.compiled
    assert out.verification.ok and out.verification.mismatches == 0
    assert out.verification.checked == op.output.size
    assert compiled.placement is not None and compiled.form in ("banded", "block-diagonal")
    assert compiled.embedding.operator == compiled.placement.operator
    chosen = min(c.cycles for c in compiled.candidates if c.cycles is not None)
    whole = min(c.cycles for c in compiled.candidates if c.source in ("solver", "alternative", "reference"))
    assert out.timing.cycles == chosen < whole / 2  # at least twice as fast as any whole-dim placement
    assert compiled.efficiency == op.macs / compiled.embedding.padded_macs < 1
    assert {"banded", "block-diagonal"} <= {c.source for c in compiled.candidates}


def test_the_report_and_the_manifest_state_the_placement(tmp_path):
    from embedcsp.bundle import read_bundle
    from embedcsp.pipeline import compile_operator
    from embedcsp.report import outcome_dict, outcome_text

    op = conv2d_general(1, 16, 30, 30, 16, 3, 3, groups=16, pads=(1, 1, 1, 1))
    out = solve_and_verify(op, VTA, Options(), seed=1)
    assert out.compiled.placement is not None
    text = "\n".join(outcome_text(out))
    name = out.compiled.placement.name
    assert f"placement  {name}: " in text and "statement out[" in text
    doc = outcome_dict(out)
    assert doc["embedding"]["placement"]["name"] == name
    assert doc["padding_efficiency"] == doc["embedding"]["padding_efficiency"] < 0.5
    compiled = compile_operator(op, VTA, Options())
    import embedcsp

    embedcsp.write_bundle(compiled, tmp_path / "b")
    bundle = read_bundle(tmp_path / "b")
    assert bundle.operator == op  # the manifest keeps the user's operator, not the band's statement
    assert bundle.manifest["embedding"]["placement"]["statement"] == compiled.placement.operator.statement()


def test_placements_can_be_left_out():
    op = conv2d_general(1, 16, 30, 30, 16, 3, 3, groups=16, pads=(1, 1, 1, 1))
    out = solve_and_verify(op, VTA, Options(placements=False), seed=1)
    assert out.compiled.placement is None
    assert all(c.source != "banded" for c in out.compiled.candidates)


def test_the_cli_states_the_placement_and_can_leave_placements_out():
    import json
    import subprocess
    import sys

    args = [sys.executable, "-m", "embedcsp.cli", "solve", "conv2d", "--n", "1", "--c", "32", "--h", "28",
            "--w", "28", "--k", "32", "--r", "3", "--s", "3", "--pad", "1", "--groups", "32", "--json"]
    on = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
    off = json.loads(subprocess.run(args + ["--no-placements"], capture_output=True, text=True, check=True).stdout)
    assert on["verification"]["ok"] and off["verification"]["ok"]
    assert on["embedding"]["placement"]["name"] in ("banded", "block-diagonal")
    assert "placement" not in off["embedding"]
    assert {c["source"] for c in off["candidates"]} <= {"solver", "alternative", "reference"}
    assert on["timing"]["cycles"] < off["timing"]["cycles"]


@pytest.mark.parametrize("args", [
    dict(n=1, c=32, h=112, w=112, stride=(1, 1), pads=(1, 1, 1, 1)),
    dict(n=2, c=5, h=9, w=31, stride=(1, 1), pads=(1, 1, 1, 1)),
    dict(n=1, c=3, h=17, w=40, stride=(2, 2), pads=(1, 1, 1, 1)),
    dict(n=1, c=4, h=12, w=23, stride=(1, 2), pads=(0, 2, 2, 0)),
], ids=["dw32-112", "batch2-w31", "stride2", "asymmetric"])
def test_the_column_band_runs_in_vtas_direct_form(args):
    """The banded statement of a depthwise conv is a conv over column tiles with the band as
    its channels: VTA's direct form walks the filter rows in micro-ops over rows kept in the
    scratchpad, so each input row is loaded about once (16/14 for the tiles' overlap)."""
    from embedcsp.csp import Pins
    from embedcsp.pipeline import Compiled, _solve, family_epilogue, verify_and_cost
    from embedcsp.targets.registry import family
    from embedcsp.targets.vta.direct import conv_shape
    from dataclasses import replace

    c = args["c"]
    op = conv2d_general(args["n"], c, args["h"], args["w"], c, 3, 3, groups=c, stride=args["stride"],
                        pads=args["pads"])
    column = next(p for p in banded(op, VTA) if "q_tile" in p.operator.extents)
    shape = conv_shape(column.operator)
    assert shape.band is not None and shape.S == 1 and shape.C == column.operator.extents["q_in"]
    options = replace(Options(), epilogue=family_epilogue(VTA, None), board="pynq")
    emb, report = _solve(column.operator, VTA, options, Pins(form="direct"))
    assert emb.form == "direct"
    fam = family("vta")
    plan, program = fam.build(emb, options)
    out = verify_and_cost(Compiled(op, VTA, options, emb, report, plan, program), seed=7)
    assert out.verification.ok and out.verification.checked == op.output.size
    data = next(t for t in out.transforms if t.tensor == "data")
    assert data.duplication <= 16 / 14 + 1e-9  # tiles overlap by the filter width less one


def test_stride_one_depthwise_takes_the_band_in_the_direct_form():
    op = conv2d_general(1, 32, 112, 112, 32, 3, 3, groups=32, pads=(1, 1, 1, 1))
    out = solve_and_verify(op, VTA, Options(time_limit=20), seed=0)
    c = out.compiled
    assert out.verification.ok and c.form == "banded" and c.embedding.form == "direct"
    matrix = min(x.cycles for x in c.candidates if x.source == "banded" and x.embedding.startswith("matrix"))
    assert out.timing.cycles < matrix  # rows kept in the scratchpad beat rows loaded per filter row


@pytest.mark.parametrize("isa", ["gemmini.toml", "gemmini_dim8.toml", "tile_mma_16x8x16.toml", "tile_grouped.toml"])
def test_placements_are_family_independent(isa):
    """A placement is a statement: every family embeds, builds and verifies it like any other."""
    from pathlib import Path

    acc = load_accelerator(Path(__file__).resolve().parent.parent / "isa" / isa)
    op = conv2d_general(1, 16, 20, 20, 16, 3, 3, groups=16, pads=(1, 1, 1, 1))
    out = solve_and_verify(op, acc, Options(time_limit=10), seed=3)
    c = out.compiled
    assert out.verification.ok and out.verification.checked == op.output.size
    assert {"banded", "block-diagonal"} & {x.source for x in c.candidates}
    assert out.timing.cycles == min(x.cycles for x in c.candidates if x.cycles is not None)
