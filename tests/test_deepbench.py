"""The packaged DeepBench tables match the source (counts, spot rows, derived facts)."""

from __future__ import annotations

import dataclasses

import pytest
from embedcsp.deepbench import (
    ConvProblem,
    GemmProblem,
    all_problems,
    conv_problems,
    gemm_problems,
    lookup,
)

from embedcsp import deepbench
from embedcsp.errors import BadInput

# P (out_w) and Q (out_h) from the markdown tables, keyed by (suite, index).
# Copied here so a bad CSV edit cannot silently change the output shapes.
_SERVER_PQ = [
    (341, 79), (341, 79), (341, 79), (166, 38), (166, 38), (166, 38), (480, 48), (240, 24),
    (120, 12), (60, 6), (54, 54), (54, 54), (27, 27), (14, 14), (7, 7), (224, 224),
    (112, 112), (56, 56), (28, 28), (14, 14), (7, 7), (224, 224), (112, 112), (56, 56),
    (28, 28), (14, 14), (7, 7), (112, 112), (28, 28), (28, 28), (14, 14), (14, 14),
    (7, 7), (7, 7), (112, 112), (28, 28), (28, 28), (14, 14), (14, 14), (7, 7),
    (7, 7), (56, 56), (28, 28), (28, 28), (14, 14), (14, 14), (14, 14), (7, 7),
    (7, 7), (7, 7), (56, 56), (28, 28), (28, 28), (14, 14), (14, 14), (14, 14),
    (7, 7), (7, 7), (7, 7), (349, 80), (350, 80), (174, 39), (175, 40), (87, 19),
    (84, 20), (41, 9), (42, 10), (349, 80), (350, 80), (174, 39), (175, 40), (87, 19),
    (84, 20), (41, 9), (42, 10), (112, 112), (56, 56), (56, 56), (28, 28), (28, 28),
    (28, 28), (14, 14), (14, 14), (14, 14), (14, 14), (14, 14), (7, 7), (7, 7),
    (7, 7), (7, 7), (7, 7), (112, 112), (56, 56), (56, 56), (28, 28), (28, 28),
    (28, 28), (14, 14), (14, 14), (14, 14), (14, 14), (14, 14), (7, 7), (7, 7),
    (7, 7), (7, 7), (7, 7),
]
_DEVICE_PQ = [
    (112, 112), (56, 56), (56, 56), (28, 28), (28, 28), (28, 28), (14, 14), (14, 14),
    (14, 14), (14, 14), (14, 14), (7, 7), (7, 7), (7, 7), (7, 7), (7, 7),
]


def _shape(p: ConvProblem) -> tuple[int, ...]:
    return (p.w, p.h, p.c, p.n, p.k, p.s, p.r, p.pad_w, p.pad_h, p.stride_w, p.stride_h)


# --- counts -----------------------------------------------------------------


def test_gemm_counts() -> None:
    assert len(gemm_problems("server")) == 75
    assert len(gemm_problems("device")) == 13
    assert len(gemm_problems()) == 88


def test_conv_counts() -> None:
    assert len(conv_problems("server")) == 107
    assert len(conv_problems("device")) == 16
    assert len(conv_problems()) == 123


def test_all_problems_is_gemm_then_conv() -> None:
    everything = all_problems()
    assert len(everything) == 211
    assert everything == gemm_problems() + conv_problems()
    assert len({p.name for p in everything}) == 211


def test_table_order_server_first_and_contiguous_indices() -> None:
    for problems, server, device in (
        (gemm_problems(), 75, 13),
        (conv_problems(), 107, 16),
    ):
        assert [p.suite for p in problems] == ["server"] * server + ["device"] * device
        assert [p.index for p in problems] == list(range(1, server + 1)) + list(
            range(1, device + 1)
        )


def test_listing_is_cached() -> None:
    assert gemm_problems() is gemm_problems()
    assert conv_problems() is conv_problems()


def test_suite_argument_is_normalised() -> None:
    assert gemm_problems(" Server ") == gemm_problems("server")
    assert conv_problems("DEVICE") == conv_problems("device")


@pytest.mark.parametrize("bad", ["training", "", "servers", 0])
def test_bad_suite_raises(bad: object) -> None:
    with pytest.raises(BadInput, match=r"unknown DeepBench suite .*expected 'server' or 'device'"):
        gemm_problems(bad)  # type: ignore[arg-type]
    with pytest.raises(BadInput):
        conv_problems(bad)  # type: ignore[arg-type]


# --- spot rows --------------------------------------------------------------


def test_gemm_spot_rows() -> None:
    p = lookup("gemm-server-2")
    assert p == GemmProblem(suite="server", index=2, m=35, n=700, k=2048)
    assert p.name == "gemm-server-2"
    d = lookup("gemm-device-4")
    assert (d.m, d.n, d.k) == (64, 1, 1216)
    assert gemm_problems("server")[0] == GemmProblem("server", 1, 5124, 700, 2048)
    assert gemm_problems("server")[-1] == GemmProblem("server", 75, 1024, 4, 512)
    assert gemm_problems("device")[-1] == GemmProblem("device", 13, 4224, 1, 128)


def test_conv_server_1() -> None:
    p = lookup("conv-server-1")
    assert isinstance(p, ConvProblem)
    assert (p.w, p.h, p.c, p.n, p.k, p.s, p.r) == (700, 161, 1, 1, 32, 20, 5)
    assert (p.pad_w, p.pad_h, p.stride_w, p.stride_h) == (0, 0, 2, 2)
    assert p.out_w == 341
    assert p.out_h == 79
    assert p.dup_of is None
    assert p.name == "conv-server-1"


def test_conv_server_28_resnet_stem() -> None:
    p = lookup("conv-server-28")
    assert isinstance(p, ConvProblem)
    assert (p.w, p.h, p.c, p.n, p.k) == (224, 224, 3, 1, 64)
    assert (p.s, p.r) == (7, 7)
    assert (p.pad_w, p.pad_h, p.stride_w, p.stride_h) == (3, 3, 2, 2)
    assert (p.out_w, p.out_h) == (112, 112)


def test_conv_asymmetric_row_keeps_w_h_order() -> None:
    # conv-server-60: W=700, H=161, 5x5 pad 1 stride 2 -> P=349, Q=80.
    p = lookup("conv-server-60")
    assert isinstance(p, ConvProblem)
    assert (p.w, p.h, p.k) == (700, 161, 64)
    assert (p.out_w, p.out_h) == (349, 80)


def test_conv_device_last_row() -> None:
    p = conv_problems("device")[-1]
    assert _shape(p) == (7, 7, 2048, 1, 512, 1, 1, 0, 0, 1, 1)
    assert p.name == "conv-device-16"


# --- derived facts stated in deepbench.md -----------------------------------


def test_gemm_m_not_multiple_of_16() -> None:
    server = [p for p in gemm_problems("server") if p.m % 16 != 0]
    device = [p for p in gemm_problems("device") if p.m % 16 != 0]
    assert len(server) == 8
    assert len(device) == 2
    assert {p.m for p in server + device} == {5124, 35}


def test_gemm_matrix_vector_counts() -> None:
    assert sum(1 for p in gemm_problems("server") if p.n <= 4) == 27
    assert sum(1 for p in gemm_problems("device") if p.n <= 4) == 6


def test_gemm_every_k_multiple_of_16() -> None:
    assert all(p.k % 16 == 0 for p in gemm_problems())


def test_gemm_no_duplicates_within_a_suite() -> None:
    for suite in ("server", "device"):
        shapes = [(p.m, p.n, p.k) for p in gemm_problems(suite)]
        assert len(set(shapes)) == len(shapes)


def test_conv_dup_rows() -> None:
    server = {p.index: p.dup_of for p in conv_problems("server") if p.dup_of is not None}
    device = {p.index: p.dup_of for p in conv_problems("device") if p.dup_of is not None}
    assert server == {86: 83, 88: 21, 102: 99, 104: 27}
    assert device == {11: 8}


def test_conv_unique_counts() -> None:
    assert len({_shape(p) for p in conv_problems("server")}) == 103
    assert len({_shape(p) for p in conv_problems("device")}) == 15


def test_conv_dups_match_their_originals() -> None:
    for suite in ("server", "device"):
        rows = {p.index: p for p in conv_problems(suite)}
        for p in rows.values():
            if p.dup_of is None:
                continue
            original = rows[p.dup_of]
            assert p.dup_of < p.index
            assert original.dup_of is None
            assert _shape(p) == _shape(original)
            assert (p.out_w, p.out_h) == (original.out_w, original.out_h)


def test_conv_undeclared_duplicates_absent() -> None:
    for suite in ("server", "device"):
        seen: set[tuple[int, ...]] = set()
        for p in conv_problems(suite):
            if p.dup_of is None:
                assert _shape(p) not in seen, p.name
            seen.add(_shape(p))


def test_conv_out_shapes_match_markdown_p_q() -> None:
    # Markdown P is out_w (from W, S, pad_w, stride_w) and Q is out_h (from H, R, ...).
    assert len(_SERVER_PQ) == 107
    assert len(_DEVICE_PQ) == 16
    for suite, expected in (("server", _SERVER_PQ), ("device", _DEVICE_PQ)):
        got = [(p.out_w, p.out_h) for p in conv_problems(suite)]
        assert got == expected, suite


def test_conv_out_shapes_positive() -> None:
    assert all(p.out_w >= 1 and p.out_h >= 1 for p in conv_problems())


# --- dataclasses ------------------------------------------------------------


def test_problems_are_frozen() -> None:
    p = lookup("gemm-server-1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.m = 1  # type: ignore[misc]
    c = lookup("conv-server-1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.w = 1  # type: ignore[misc]


def test_module_exports() -> None:
    assert deepbench.SUITES == ("server", "device")
    for name in ("GemmProblem", "ConvProblem", "gemm_problems", "conv_problems",
                 "all_problems", "lookup"):
        assert name in deepbench.__all__


# --- lookup -----------------------------------------------------------------


def test_lookup_round_trips_every_name() -> None:
    for p in all_problems():
        assert lookup(p.name) is p


@pytest.mark.parametrize(
    "spelling", ["GEMM-SERVER-2", "Gemm-Server-2", "  gemm-server-2\n", "\tgemm-server-02 "]
)
def test_lookup_case_and_whitespace_insensitive(spelling: str) -> None:
    assert lookup(spelling) == GemmProblem("server", 2, 35, 700, 2048)


def test_lookup_conv_case_insensitive() -> None:
    assert lookup(" CONV-Device-11 ").name == "conv-device-11"


def test_lookup_unknown_row_message() -> None:
    with pytest.raises(BadInput) as info:
        lookup("gemm-server-99")
    msg = str(info.value)
    assert msg == (
        "unknown DeepBench operator 'gemm-server-99': gemm-server has rows 1..75 "
        "(list them with 'embedcsp deepbench list')"
    )
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("gemm-device-14", "gemm-device has rows 1..13"),
        ("conv-server-108", "conv-server has rows 1..107"),
        ("conv-device-0", "conv-device has rows 1..16"),
        ("CONV-DEVICE-17", "conv-device has rows 1..16"),
    ],
)
def test_lookup_out_of_range_names_the_range(name: str, rows: str) -> None:
    with pytest.raises(BadInput, match=rows):
        lookup(name)


def test_lookup_malformed_suggests_close_match() -> None:
    with pytest.raises(BadInput) as info:
        lookup("gemm-sever-2")
    msg = str(info.value)
    assert msg.startswith("malformed DeepBench operator name 'gemm-sever-2': ")
    assert "expected gemm-<server|device>-N or conv-<server|device>-N" in msg
    assert "did you mean" in msg
    assert "'gemm-server-2'" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("name", ["", "   ", "resnet50", "gemm", "gemm-server", "gemm-server-x"])
def test_lookup_malformed_is_bad_input(name: str) -> None:
    with pytest.raises(BadInput) as info:
        lookup(name)
    msg = str(info.value)
    assert "malformed DeepBench operator name" in msg
    assert "expected gemm-<server|device>-N or conv-<server|device>-N" in msg
    assert "\n" not in msg


def test_lookup_malformed_without_close_match_points_to_list() -> None:
    with pytest.raises(BadInput, match=r"list them with 'embedcsp deepbench list'"):
        lookup("zzzzzzzzzzzz")


def test_lookup_newline_in_name_stays_one_line() -> None:
    with pytest.raises(BadInput) as info:
        lookup("gemm\nserver-1")
    assert "\n" not in str(info.value)


def test_lookup_non_string_is_bad_input() -> None:
    with pytest.raises(BadInput):
        lookup(7)  # type: ignore[arg-type]


def test_bad_input_exit_code() -> None:
    with pytest.raises(BadInput) as info:
        lookup("gemm-server-99")
    assert info.value.exit_code == 2
