"""Named operators over statements (embedcsp/ops/): grouped, depthwise, dilated and asymmetric
convs and batched matmuls, checked against numpy written here and verified on VTA."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from embedcsp import (
    BadInput,
    Options,
    bmm,
    conv2d,
    conv2d_general,
    load_accelerator,
    solve_and_verify,
)
from embedcsp.cli import app
from embedcsp.reference import accumulate, random_inputs

VTA = load_accelerator()


def numpy_conv(data, weight, groups, stride, dilation, pads):
    """NCHW / KCRS conv with groups, dilation and (top, bottom, left, right) zero padding."""
    n, c, h, w = data.shape
    k, cg, r, s = weight.shape
    (sh, sw), (dh, dw), (top, bottom, left, right) = stride, dilation, pads
    x = np.pad(data.astype(np.int64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    p = (h + top + bottom - dh * (r - 1) - 1) // sh + 1
    q = (w + left + right - dw * (s - 1) - 1) // sw + 1
    out = np.zeros((n, k, p, q), np.int64)
    kg = k // groups
    for o in range(k):
        g = o // kg
        for rr in range(r):
            for ss in range(s):
                win = x[:, g * cg:(g + 1) * cg, rr * dh:rr * dh + sh * (p - 1) + 1:sh,
                        ss * dw:ss * dw + sw * (q - 1) + 1:sw]
                out[:, o] += np.einsum("nchw,c->nhw", win, weight[o, :, rr, ss].astype(np.int64))
    return out


@pytest.mark.parametrize("shape, kw", [
    ((1, 8, 9, 9, 8, 3, 3), dict(groups=8, pads=(1, 1, 1, 1))),                       # depthwise
    ((2, 6, 7, 8, 9, 3, 3), dict(groups=3, stride=(2, 1), pads=(1, 1, 1, 1))),        # grouped
    ((1, 4, 12, 11, 5, 3, 3), dict(dilation=(2, 3), pads=(2, 0, 1, 3))),              # dilated, asymmetric
    ((1, 3, 10, 10, 4, 5, 5), dict(stride=(2, 2), pads=(2, 1, 0, 2))),                # asymmetric only
])
def test_general_convs_mean_what_numpy_says_and_verify_on_vta(shape, kw):
    op = conv2d_general(*shape, **kw)
    inputs = random_inputs(op, 2)
    n, c, h, w, k, r, s = shape
    groups = kw.get("groups", 1)
    data = inputs["data"].reshape(n, c, h, w)
    weight = inputs["weight"].reshape(k, c // groups, r, s)
    want = numpy_conv(data, weight, groups, kw.get("stride", (1, 1)), kw.get("dilation", (1, 1)), kw["pads"])
    got = accumulate(op, inputs).reshape(want.shape)
    np.testing.assert_array_equal(got, want.astype(np.int32))
    o = solve_and_verify(op, VTA, Options(time_limit=5), seed=2)
    assert o.verification.ok


def test_a_plain_conv_stays_the_named_kind():
    assert conv2d_general(1, 3, 9, 9, 4, 3, 3, stride=(2, 2), pads=(1, 1, 1, 1)) == conv2d(1, 3, 9, 9, 4, 3, 3, 1, 1, 2, 2)


def test_depthwise_keeps_the_taps_on_the_lanes():
    o = solve_and_verify(conv2d_general(1, 32, 14, 14, 32, 3, 3, groups=32, pads=(1, 1, 1, 1)), VTA,
                         Options(time_limit=5), seed=1)
    assert o.verification.ok and o.compiled.embedding.efficiency > 9 / 256  # far above channels on lanes


def test_bmm_is_independent_gemms():
    op = bmm(3, 5, 7, 9)
    inputs = random_inputs(op, 1)
    want = np.matmul(inputs["A"].astype(np.int64), inputs["B"].astype(np.int64))
    np.testing.assert_array_equal(accumulate(op, inputs), want.astype(np.int32))


@pytest.mark.parametrize("kw, fragment", [
    (dict(groups=3), "3 groups must divide both C=8 and K=8"),
    (dict(dilation=(5, 1)), "dilated to 11x3 is larger than the padded 9x9"),
    (dict(pads=(1, -1, 0, 0)), "pad_bottom must be a whole number >= 0"),
    (dict(groups=0), "groups must be at least 1"),
])
def test_refusals(kw, fragment):
    with pytest.raises(BadInput, match=fragment):
        conv2d_general(1, 8, 9, 9, 8, 3, 3, **kw)


def test_cli_named_operators():
    runner = CliRunner()
    r = runner.invoke(app, ["solve", "conv2d", "--n", "1", "--c", "8", "--h", "8", "--w", "8", "--k", "8",
                            "--r", "3", "--s", "3", "--groups", "8", "--dilation", "2", "--pad-top", "2",
                            "--pad-bottom", "2", "--pad-left", "1", "--pad-right", "3"])
    assert r.exit_code == 0 and "verified" in r.stdout, r.stdout + r.stderr
    r = runner.invoke(app, ["solve", "bmm", "--b", "4", "--m", "20", "--n", "16", "--k", "24"])
    assert r.exit_code == 0 and "verified   1280 outputs" in r.stdout, r.stdout + r.stderr
    r = runner.invoke(app, ["solve", "conv2d", "--n", "1", "--c", "8", "--h", "8", "--w", "8", "--k", "8",
                            "--r", "3", "--s", "3", "--pad", "1", "--pad-top", "1"])
    assert r.exit_code == 2 and "give either --pad" in r.stderr


TILE_FILES = ("tile_mma_16x8x16", "tile_8x8x32", "tile_matvec", "tile_dot4", "tile_grouped")


@pytest.mark.parametrize("name", TILE_FILES)
def test_every_tile_instruction_runs_bmm_and_depthwise(name):
    from pathlib import Path

    acc = load_accelerator(Path(__file__).resolve().parents[1] / "isa" / f"{name}.toml")
    for op in (bmm(3, 6, 5, 7), conv2d_general(1, 6, 7, 7, 6, 3, 3, groups=6, pads=(1, 1, 1, 1))):
        o = solve_and_verify(op, acc, Options(time_limit=5), seed=3)
        assert o.verification.ok, (name, op.describe())


@pytest.mark.parametrize("isa", ["gemmini.toml", "gemmini_dim8.toml"])
def test_gemmini_runs_depthwise_and_bmm_once_per_batch_element(isa, tmp_path):
    from pathlib import Path

    from embedcsp import read_bundle, run_bundle, write_bundle
    from embedcsp.pipeline import compile_operator

    acc = load_accelerator(Path(__file__).resolve().parents[1] / "isa" / isa)
    for op in (bmm(3, 9, 20, 11), conv2d_general(1, 6, 7, 7, 6, 3, 3, groups=6, pads=(1, 1, 1, 1))):
        o = solve_and_verify(op, acc, Options(time_limit=5), seed=4)
        assert o.verification.ok and o.compiled.plan.n_bats > 1
    compiled = compile_operator(bmm(3, 9, 20, 11), acc, Options(time_limit=5))
    write_bundle(compiled, tmp_path / "b")
    assert run_bundle(read_bundle(tmp_path / "b"), seed=7).ok


@pytest.mark.parametrize("isa", [None, "gemmini.toml"])
def test_bmm_has_a_reference_the_dense_mapping_per_batch_element(isa):
    from pathlib import Path

    acc = load_accelerator(None if isa is None else Path(__file__).resolve().parents[1] / "isa" / isa)
    o = solve_and_verify(bmm(3, 35, 16, 32), acc, Options(time_limit=5, strategy="reference"), seed=5)
    emb = o.compiled.embedding
    assert o.verification.ok and any(lp.dim == "b" and lp.role == "bat" for lp in emb.loops)
    assert emb.group("red").dims == ("k",)


@pytest.mark.parametrize("shape, kw", [
    ((1, 16, 9, 8, 16, 3, 3), dict(groups=16, stride=(2, 2), pads=(0, 1, 0, 1))),  # depthwise, Keras 'same'
    ((2, 12, 7, 7, 8, 3, 3), dict(groups=4, pads=(1, 1, 1, 1))),                    # grouped, batch 2
])
def test_grouped_reference_from_the_api_computes_the_numpy_conv(shape, kw):
    """The reference program (the fixed conv once per group) on the user's own tensors, via the API."""
    import embedcsp

    n, c, h, w, k, r, s = shape
    groups = kw["groups"]
    op = conv2d_general(*shape, **kw)
    compiled = embedcsp.compile_operator(op, VTA, Options(strategy="reference"))
    assert compiled.embedding.form == "direct" and compiled.plan.n_bats == groups
    rng = np.random.default_rng(9)
    data = rng.integers(-128, 128, size=(n, c, h, w), dtype=np.int8)
    weight = rng.integers(-128, 128, size=(k, c // groups, r, s), dtype=np.int8)
    result = embedcsp.run(compiled, {"data": data.reshape(op.tensor("data").shape),
                                     "weight": weight.reshape(op.tensor("weight").shape)})
    assert result.verification.ok
    want = numpy_conv(data, weight, groups, kw.get("stride", (1, 1)), (1, 1), kw["pads"])
    got = result.outputs["out"].reshape(want.shape)
    np.testing.assert_array_equal(got, want.astype(np.int8))  # VTA's default epilogue keeps the low 8 bits


def test_cli_grouped_reference():
    r = CliRunner().invoke(app, ["solve", "conv2d", "--n", "1", "--c", "24", "--h", "8", "--w", "8", "--k", "24",
                                 "--r", "3", "--s", "3", "--pad", "1", "--groups", "3", "--strategy", "reference"])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "batches iterate over g[3]" in r.stdout and "verified   1536 outputs bit-exact" in r.stdout
    assert "efficiency 0.2500 (useful 110592 / issued 442368 MACs)" in r.stdout  # 8 of 16 lanes each way
    r = CliRunner().invoke(app, ["solve", "conv2d", "--n", "1", "--c", "8", "--h", "8", "--w", "8", "--k", "8",
                                 "--r", "3", "--s", "3", "--pad", "2", "--dilation", "2", "--groups", "8",
                                 "--strategy", "reference"])
    assert r.exit_code == 3 and "dilated" in r.stderr  # TVM's VTA conv asserts dilation 1: no reference
