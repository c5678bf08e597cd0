"""Epilogues as the operator's contract (docs/epilogues.md): each defined once in the ground
truth, worked by hand here, and refused by a family whose hardware cannot apply it."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from embedcsp import (
    BadInput,
    Epilogue,
    Options,
    gemm,
    load_accelerator,
    solve_and_verify,
)
from embedcsp.cli import app
from embedcsp.pipeline import family_epilogue

VTA = load_accelerator(None)
SUMS = np.array([0, 1, -1, 127, 128, -129, 255, 256, 300, -300, 2**31 - 1, -2**31, 2**25 + 2**18 + 1],
                np.int64)


def test_wrap_keeps_the_low_byte():
    got = Epilogue("wrap").apply(SUMS)
    assert got.dtype == np.int8
    assert got.tolist() == [0, 1, -1, 127, -128, 127, -1, 0, 44, -44, -1, 0, 1]


def test_saturate_clips():
    assert Epilogue("saturate").apply(SUMS).tolist() == [0, 1, -1, 127, 127, -128, 127, 127, 127, -128,
                                                          127, -128, 127]


def test_int32_is_the_sum():
    got = Epilogue("int32").apply(SUMS)
    assert got.dtype == np.int32 and got.tolist() == SUMS.astype(np.int32).tolist()


def test_requant_floor_shifts_arithmetically():
    sums = np.array([5, -5, 7, -7, 8, -8, 2000, -2000])
    # 5 >> 2 = 1, -5 >> 2 = -2 (floor), 2000 >> 2 = 500 -> 127
    assert Epilogue("requant", 2, "floor").apply(sums).tolist() == [1, -2, 1, -2, 2, -2, 127, -128]


def test_requant_nearest_even_rounds_half_to_even():
    sums = np.array([2, 6, 10, -2, -6, 5, -5, 7])  # /4: 0.5, 1.5, 2.5, -0.5, -1.5, 1.25, -1.25, 1.75
    assert Epilogue("requant", 2, "nearest_even").apply(sums).tolist() == [0, 2, 2, 0, -2, 1, -1, 2]


def test_requant_nearest_even_converts_to_float32_first():
    # docs/epilogues.md: 2^25 + 2^18 + 1 is not a float32; it becomes 2^25 + 2^18, and
    # (2^25 + 2^18) / 2^19 = 64.5 rounds to the even 64, where exact arithmetic gives 65.
    assert Epilogue("requant", 19, "nearest_even").apply(np.array([2**25 + 2**18 + 1])).tolist() == [64]


def test_an_unresolved_requant_is_not_applied():
    with pytest.raises(ValueError, match="resolved"):
        Epilogue("requant", 3).apply(SUMS)


@pytest.mark.parametrize("bad, fragment", [
    (dict(kind="relu"), "unknown epilogue 'relu'"),
    (dict(kind="requant", shift=16, rounding="floor"), "within 0..15"),
    (dict(kind="requant", shift=32), "within 0..31"),
    (dict(kind="requant", shift=2, rounding="up"), "unknown requant rounding 'up'"),
    (dict(kind="wrap", shift=3), "takes no shift or rounding"),
    (dict(kind="int32", rounding="floor"), "takes no shift or rounding"),
])
def test_malformed_epilogues_are_refused(bad, fragment):
    with pytest.raises(BadInput, match=fragment):
        Epilogue(**bad)


def test_the_family_fills_in_its_default_and_its_rounding():
    assert family_epilogue(VTA, None) == Epilogue("wrap")
    assert family_epilogue(VTA, Epilogue("requant", 4)) == Epilogue("requant", 4, "floor")


@pytest.mark.parametrize("epilogue, offered", [
    (Epilogue("int32"), "int32 epilogue"),
    (Epilogue("requant", 4, "nearest_even"), "requant/nearest_even epilogue"),
])
def test_vta_refuses_what_its_store_cannot_do(epilogue, offered):
    with pytest.raises(BadInput, match=f"cannot apply the {offered}; .* offers wrap, requant/floor, saturate"):
        family_epilogue(VTA, epilogue)


def test_vta_saturates_with_its_alu_and_verifies():
    o = solve_and_verify(gemm(35, 70, 300), VTA, Options(time_limit=5, epilogue=Epilogue("saturate")), seed=3)
    assert o.verification.ok and o.verification.checked == 35 * 70
    assert o.compiled.options.epilogue == Epilogue("saturate")
    # 300 products of int8 pairs: most sums lie beyond int8, so the clip is exercised.
    out = o.inputs["A"].astype(np.int64) @ o.inputs["B"].astype(np.int64)
    assert (np.abs(out) > 127).mean() > 0.5


def test_cli_names_the_epilogue_and_refuses_a_lone_rounding(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["solve", "gemm", "--m", "8", "--n", "16", "--k", "16", "--epilogue", "saturate",
                             "--json"])
    assert ok.exit_code == 0, ok.stdout
    bad = runner.invoke(app, ["solve", "gemm", "--m", "8", "--n", "16", "--k", "16", "--rounding", "floor"])
    assert bad.exit_code == 2 and "--rounding applies to --epilogue requant only" in bad.stderr
    bad = runner.invoke(app, ["solve", "gemm", "--m", "8", "--n", "16", "--k", "16", "--epilogue", "int32"])
    assert bad.exit_code == 2 and "cannot apply the int32 epilogue" in bad.stderr
