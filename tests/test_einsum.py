"""Any affine operator from one statement (embedcsp/einsum.py): parsed with sympy, refused
clearly when it is not affine, compiled and verified against the statement's own semantics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedcsp import (
    BadInput,
    Options,
    conv2d,
    einsum,
    gemm,
    load_accelerator,
    solve_and_verify,
)
from embedcsp.cli import app
from embedcsp.einsum import parse_extents, parse_shapes

ISA = Path(__file__).resolve().parents[1] / "isa"
CONV = "out[n,k,p,q] += data[n,c,2*p+r-1,2*q+s-1] * weight[k,c,r,s]"


def test_named_operators_are_their_own_statements():
    for op in (gemm(7, 5, 3), conv2d(2, 3, 9, 8, 4, 3, 3, 1, 1, 2, 2)):
        shapes = {t.name: t.shape for t in op.tensors}
        again = einsum(op.statement(), op.extents, shapes)
        assert again.tensors == op.tensors and again.dims == op.dims and again.kind == "einsum"


def test_a_conv_statement_reads_like_the_issue():
    op = einsum(CONV, dict(n=1, k=8, p=5, q=5, c=3, r=3, s=3), {"data": (1, 3, 9, 9)})
    data = op.tensor("data")
    assert str(data.access[2]) == "2*p+r-1" and op.output.shape == (1, 8, 5, 5)
    assert op.tensor("weight").shape == (8, 3, 3, 3)  # plain dims give their extents


@pytest.mark.parametrize("statement, dims, shapes, fragment", [
    ("out[m] += a[m,k*k] * b[k]", dict(m=2, k=3), {"a": (2, 9)}, "is not affine in the dims"),
    ("out[m] += a[m,k/2] * b[k]", dict(m=2, k=3), {"a": (2, 2)}, "needs integer coefficients"),
    ("out[m] += a[m,k+j] * b[k]", dict(m=2, k=3), {"a": (2, 9)}, "uses j, which --dims does not give"),
    ("out[m] += a[m,k] * b[k]", dict(m=2), {}, "uses k, which --dims does not give"),
    ("out[m] += a[m,k] * b[k]", dict(m=2, k=3, z=4), {}, "--dims gives z, which no index"),
    ("out[m] += a[m,2*k] * b[k]", dict(m=2, k=3), {}, "give its shape with --shape a="),
    ("out[m+1] += a[m,k] * b[k]", dict(m=2, k=3), {}, "must be one dim"),
    ("out[m] = a[m,k] * b[k]", dict(m=2, k=3), {}, "is not of the form"),
    ("out[m] += out[m,k] * b[k]", dict(m=2, k=3), {}, "names a tensor twice"),
    ("out[m] += a[m,k] * b[k]", dict(m=2, k=0), {}, "within 1.."),
    ("out[m] += a[m,k] * b[k]", dict(m=2, k=3), {"c": (3,)}, "--shape names c"),
    ("out[m] += a[m,k] * b[k]", dict(m=2, k=3), {"b": (3, 1)}, "--shape b has 2 axes"),
    ("out[m] += a[m,,k] * b[k]", dict(m=2, k=3), {}, "has an empty index"),
    ("out[m] += a[m,k)] * b[k]", dict(m=2, k=3), {}, "is not an expression"),
])
def test_refusals_name_what_is_wrong(statement, dims, shapes, fragment):
    with pytest.raises(BadInput, match=fragment.replace("(", r"\(").replace("*", r"\*")):
        einsum(statement, dims, shapes)


def test_flag_parsers():
    assert parse_extents("n=1, k=64", "--dims") == {"n": 1, "k": 64}
    assert parse_shapes("data=1x3x9x9,w=2x2") == {"data": (1, 3, 9, 9), "w": (2, 2)}
    for bad in ("n1", "n=x"):
        with pytest.raises(BadInput, match="name=extent"):
            parse_extents(bad, "--dims")
    with pytest.raises(BadInput, match="tensor=AxBxC"):
        parse_shapes("data=1xx3")


def test_a_dilated_conv_statement_compiles_and_verifies_on_vta():
    op = einsum("out[n,k,p,q] += data[n,c,p+2*r-2,q+2*s-2] * weight[k,c,r,s]",
                dict(n=1, k=20, p=9, q=9, c=5, r=3, s=3), {"data": (1, 5, 9, 9)})
    o = solve_and_verify(op, load_accelerator(), Options(time_limit=5), seed=4)
    assert o.verification.ok and o.verification.checked == 20 * 81


def test_a_batched_matmul_runs_on_the_grouped_tile_on_vta_and_on_gemmini():
    op = einsum("C[b,m,n] += A[b,m,k] * B[b,k,n]", dict(b=6, m=5, n=7, k=9))
    o = solve_and_verify(op, load_accelerator(ISA / "tile_grouped.toml"), Options(time_limit=5), seed=2)
    assert o.verification.ok and "b" in o.compiled.embedding.groups_of("bat")[0].dims
    o = solve_and_verify(op, load_accelerator(), Options(time_limit=5), seed=2)
    assert o.verification.ok and o.compiled.plan.n_bats == 6  # one pass of the tile loops per batch
    for isa in ("gemmini.toml", "gemmini_dim8.toml"):
        o = solve_and_verify(op, load_accelerator(ISA / isa), Options(time_limit=5), seed=2)
        assert o.verification.ok and o.compiled.plan.n_bats == 6


def test_a_depthwise_conv_on_vta_puts_the_taps_on_block_in():
    """The issue's non-obvious placement: filter taps on BLOCK_IN, output pixels on BLOCK_OUT,
    the data's windows in the WGT buffer (duplicated on the host), channels a batch loop: the best
    whole-dim placement (the banded one, tests/test_placements.py, is left out here)."""
    op = einsum("out[n,g,p,q] += data[n,g,p+r-1,q+s-1] * w[g,r,s]", dict(n=1, g=8, p=14, q=14, r=3, s=3),
                {"data": (1, 8, 14, 14)})
    o = solve_and_verify(op, load_accelerator(), Options(time_limit=5, placements=False), seed=1)
    emb = o.compiled.embedding
    assert o.verification.ok and dict(emb.binding)["wgt"] == "data"
    assert set(emb.group("red").dims) == {"r", "s"} and set(emb.group("col").dims) == {"p", "q"}
    assert emb.efficiency == pytest.approx(9 / 16 * 196 / 208)


def test_cli_einsum_with_a_bundle_that_runs_again(tmp_path):
    runner = CliRunner()
    out = tmp_path / "b"
    r = runner.invoke(app, ["solve", "einsum", "y[i] += W[i,j] * x[j]", "--dims", "i=40,j=33",
                            "--isa", str(ISA / "tile_matvec.toml"), "--out", str(out)])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "verified   40 outputs bit-exact" in r.stdout
    again = runner.invoke(app, ["run", str(out), "--seed", "9"])
    assert again.exit_code == 0 and "verified" in again.stdout
    bad = runner.invoke(app, ["solve", "einsum", "y[i] += W[i,j*j] * x[j]", "--dims", "i=4,j=3",
                              "--shape", "W=4x9"])
    assert bad.exit_code == 2 and "is not affine in the dims" in bad.stderr
    import json
    table = json.loads((out / "manifest.json").read_text())["operator"]
    assert table == {"kind": "einsum", "statement": "y[i] += W[i,j] * x[j]", "dims": {"i": 40, "j": 33},
                     "shapes": {"W": [40, 33], "x": [33], "y": [40]}}
    assert np.load(out / "layout.npz")["y_dram"].shape == (40,)
