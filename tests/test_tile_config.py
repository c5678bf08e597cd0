"""Tile ISA files: the five shipped ones, and every refusal with its message (docs/tile.md 1-3)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from embedcsp.errors import IsaError
from embedcsp.pattern import Operand, Pattern
from embedcsp.targets.tile.config import (
    describe,
    load_tile,
    tile_accelerator,
    tile_config_from_dict,
    tile_from_dict,
)

ISA = Path(__file__).resolve().parents[1] / "isa"
SHIPPED = {
    "tile_mma_16x8x16.toml": ("mma-16x8x16", "m16n8k16 ii1"),
    "tile_8x8x32.toml": ("npu-8x8x32", "m8n8k32 ii2 u8/i8/i32"),
    "tile_matvec.toml": ("matvec-16x16", "m16k16 ii1 i8/i16/i32"),
    "tile_dot4.toml": ("dot4", "k4 ii1"),
    "tile_grouped.toml": ("grouped-4x4x4", "g4o4i4 ii1"),
}

DOC = {
    "accelerator": {"name": "mma", "family": "tile"},
    "intrinsic": {"statement": "c[m,n] += a[m,k] * b[k,n]", "lanes": {"m": 16, "n": 8, "k": 16},
                  "ii": 1},
    "dtypes": {"a": "int8", "b": "int8", "c": "int32"},
    "memory": {"a": 65536, "b": 65536, "c": 65536},
    "dma": {"bytes_per_cycle": 16},
}


def doc_with(path: tuple[str, ...], value=None, *, drop: bool = False) -> dict:
    """DOC with one key replaced (or dropped), at any depth."""
    doc = copy.deepcopy(DOC)
    where = doc
    for key in path[:-1]:
        where = where[key]
    if drop:
        del where[path[-1]]
    else:
        where[path[-1]] = value
    return doc


@pytest.mark.parametrize("file", SHIPPED)
def test_the_shipped_files_load_with_their_names_and_tags(file):
    acc = load_tile(ISA / file)
    assert (acc.name, acc.config.tag()) == SHIPPED[file]
    assert acc.family == "tile" and acc.pattern is acc.config.pattern
    assert acc.source == str(ISA / file)
    # tables() states the file back: loading it again gives the same description.
    again = tile_from_dict({"accelerator": {"name": acc.name, "family": "tile"},
                            **acc.config.tables()}, "again")
    assert again.config == acc.config
    assert len(acc.digest) == 64


def test_the_mma_file_is_the_design_brief_example():
    cfg = load_tile(ISA / "tile_mma_16x8x16.toml").config
    assert cfg.tables() == {k: v for k, v in DOC.items() if k != "accelerator"}
    assert cfg.operand_names == ("a", "b", "c")
    assert [cfg.tile_shape(n) for n in "abc"] == [(16, 16), (16, 8), (16, 8)]
    assert [cfg.tile_bytes(n) for n in "abc"] == [256, 128, 512]
    assert [cfg.slots(n) for n in "abc"] == [256, 512, 128]
    assert [cfg.lane_kind(d) for d in "mnk"] == ["spatial", "spatial", "reduction"]
    assert cfg.macs == 2048 and cfg.reduction == 16


def test_a_batched_lane_is_accepted_and_built_without_parse_pattern():
    acc = load_tile(ISA / "tile_grouped.toml")
    assert acc.pattern == Pattern(output=Operand("acc", ("g", "o")),
                                  inputs=(Operand("inp", ("g", "i")), Operand("wgt", ("g", "o", "i"))),
                                  lanes=(("g", 4), ("o", 4), ("i", 4)))
    cfg = acc.config
    assert [cfg.lane_kind(d) for d in "goi"] == ["batched", "spatial", "reduction"]
    assert cfg.reduction == 4 and cfg.macs == 64


def test_a_scalar_output_and_default_dtypes():
    cfg = load_tile(ISA / "tile_dot4.toml").config
    assert cfg.pattern.output == Operand("z", ())
    assert cfg.tile_shape("z") == () and cfg.tile_bytes("z") == 4
    assert dict(cfg.dtypes) == {"x": "int8", "y": "int8", "z": "int32"}
    assert cfg.tables()["dtypes"] == {"x": "int8", "y": "int8", "z": "int32"}


def test_describe_names_rate_memories_and_dma():
    lines = describe(load_tile(ISA / "tile_grouped.toml").config)
    assert lines[0] == "rate       one instruction every 1 cycle(s): 64 MACs"
    assert "memory     wgt: 65536 B, 1024 slot(s) of one 4x4x4 int8 tile (64 B)" in lines
    assert lines[-1] == "dma        16 B/cycle"


def test_the_python_api_checks_like_a_file():
    acc = tile_accelerator("y[m] += A[m,k] * x[k]", {"m": 4, "k": 8}, memory={"A": 32, "x": 40, "y": 16},
                           bytes_per_cycle=2, dtypes={"x": "int16"})
    assert acc.config.tag() == "m4k8 ii1 i8/i16/i32" and acc.name == "tile"
    assert [acc.config.slots(n) for n in ("A", "x", "y")] == [1, 2, 1]
    with pytest.raises(IsaError, match=r"^tile: \[memory\] x = 8 bytes cannot hold one x tile "
                                       r"\(8 int16 = 16 bytes\)$"):
        tile_accelerator("y[m] += A[m,k] * x[k]", {"m": 4, "k": 8}, memory={"A": 32, "x": 8, "y": 16},
                         bytes_per_cycle=2, dtypes={"x": "int16"}, name="tile")


def test_uint8_and_int16_are_accepted_where_exact():
    doc = doc_with(("dtypes",), {"a": "uint8", "b": "int16", "c": "int32"})
    assert tile_config_from_dict(doc, "x.toml")[1].dtype("a").hi == 255
    # int32 x int32 is exact for a single product: 2^62 + 2^31 < 2^63.
    ok = doc_with(("intrinsic", "lanes"), {"m": 16, "n": 8, "k": 1})
    ok["dtypes"] = {"a": "int32", "b": "int32", "c": "int32"}
    ok["memory"] = {"a": 65536, "b": 65536, "c": 65536}
    assert tile_config_from_dict(ok, "x.toml")[1].reduction == 1


REFUSALS = [
    # (what is changed, the message, anchored after "x.toml: ")
    (("accelerator",), None, "a tile ISA file needs an \\[accelerator\\] table"),
    (("intrinsic",), None, "a tile ISA file needs an \\[intrinsic\\] table"),
    (("memory",), None, "a tile ISA file needs a \\[memory\\] table"),
    (("dma",), None, "a tile ISA file needs a \\[dma\\] table"),
    (("intrinsic",), 3, "\\[intrinsic\\] must be a table, got int"),
    (("dtypes",), "int8", "\\[dtypes\\] must be a table, got str"),
    (("accelerator", "name"), None, "\\[accelerator\\] is missing name"),
    (("accelerator", "family"), None, "\\[accelerator\\] is missing family"),
    (("accelerator", "family"), "vta", "\\[accelerator\\] family must be 'tile' here, got 'vta'"),
    (("accelerator", "name"), "", "\\[accelerator\\] name must be a non-empty string, got ''"),
    (("accelerator", "name"), 7, "\\[accelerator\\] name must be a non-empty string, got 7"),
    (("accelerator", "clock"), 100, "unknown \\[accelerator\\] key\\(s\\) clock; expected name, family"),
    (("intrinsic", "ii"), None, "\\[intrinsic\\] is missing ii"),
    (("intrinsic", "statement"), None, "\\[intrinsic\\] is missing statement"),
    (("intrinsic", "lanes"), None, "\\[intrinsic\\] is missing lanes"),
    (("intrinsic", "latency"), 4,
     "unknown \\[intrinsic\\] key\\(s\\) latency; expected statement, lanes, ii"),
    (("intrinsic", "statement"), 5, ("\\[intrinsic\\] statement must be a string such as "
                                    "'c\\[m,n\\] \\+= a\\[m,k\\] \\* b\\[k,n\\]', got 5")),
    (("intrinsic", "lanes"), [16, 8, 16], ("\\[intrinsic\\] lanes must be a table such as "
                                          "\\{ m = 16, n = 8, k = 16 \\}, got \\[16, 8, 16\\]")),
    (("intrinsic", "statement"), "c[m,n] = a[m,k] * b[k,n]",
     ("\\[intrinsic\\] statement 'c\\[m,n\\] = a\\[m,k\\] \\* b\\[k,n\\]' is not of the form "
     "'out\\[x,y\\] \\+= a\\[x,z\\] \\* b\\[z,y\\]'")),
    (("intrinsic", "statement"), "c[m,n] += c[m,k] * b[k,n]",
     "\\[intrinsic\\] statement 'c\\[m,n\\] \\+= c\\[m,k\\] \\* b\\[k,n\\]' names an operand twice"),
    (("intrinsic", "statement"), "c[m,n] += a[m,k,k] * b[k,n]",
     "\\[intrinsic\\] statement 'c\\[m,n\\] \\+= a\\[m,k,k\\] \\* b\\[k,n\\]' repeats a dim inside a"),
    (("intrinsic", "statement"), "c[m,,n] += a[m,k] * b[k,n]",
     ("\\[intrinsic\\] statement 'c\\[m,,n\\] \\+= a\\[m,k\\] \\* b\\[k,n\\]': operand c has an "
      "empty dim name")),
    (("intrinsic", "statement"), "c[m,n] += a[m,k,j] * b[k,n]",
     ("\\[intrinsic\\] dim j appears only in a; a dim must index the output and one input "
     "\\(spatial\\), both inputs \\(reduction\\), or all three \\(batched\\)")),
    (("intrinsic", "statement"), "c[m,n,p] += a[m,k] * b[k,n]",
     "\\[intrinsic\\] dim p appears only in c; "),
    (("intrinsic", "statement"), "c[] += a[] * b[]",
     ("\\[intrinsic\\] statement 'c\\[\\] \\+= a\\[\\] \\* b\\[\\]' has no dims; a tile instruction "
     "needs at least one lane")),
    (("intrinsic", "statement"), "c[m,n] += a[m,k,p,q,r] * b[k,n,p,q,r]",
     "\\[intrinsic\\] operand a has 5 dims; program records describe at most 4"),
    (("intrinsic", "lanes"), {"m": 16, "n": 8}, "\\[intrinsic\\] lanes give no extent for k"),
    (("intrinsic", "lanes"), {"m": 16, "n": 8, "k": 16, "q": 2},
     "\\[intrinsic\\] lanes name q, which the statement does not use"),
    (("intrinsic", "lanes", "k"), 0, "\\[intrinsic\\] lane k must be >= 1, got 0"),
    (("intrinsic", "lanes", "k"), True, "\\[intrinsic\\] lane k must be a whole number, got True"),
    (("intrinsic", "lanes", "k"), 16.0, "\\[intrinsic\\] lane k must be a whole number, got 16.0"),
    (("intrinsic", "lanes", "k"), 1 << 32,
     "\\[intrinsic\\] lane k = 4294967296 does not fit the u32 extent of a program record"),
    (("intrinsic", "ii"), True, "\\[intrinsic\\] ii must be a whole number, got True"),
    (("intrinsic", "ii"), 0, "\\[intrinsic\\] ii must be >= 1, got 0"),
    (("intrinsic", "ii"), "1", "\\[intrinsic\\] ii must be a whole number, got '1'"),
    (("dtypes", "d"), "int8", ("\\[dtypes\\] names d, which the statement does not use; its operands "
                              "are a, b, c")),
    (("dtypes", "a"), 8, "\\[dtypes\\] a must be a string such as 'int8', got 8"),
    (("dtypes", "a"), "float16", ("\\[dtypes\\] a = 'float16' is not supported; expected one of int8, "
                                 "uint8, int16, int32 \\(integer types the model computes exactly\\)")),
    (("dtypes", "c"), "int64", "\\[dtypes\\] c = 'int64' is not supported"),
    (("dtypes",), {"a": "int32", "b": "int32", "c": "int32"},
     # 2^31 (the accumulator) + 16 * 2^31 * 2^31
     ("\\[dtypes\\] int32 x int32 products summed over 16 reduction lanes into int32 can reach "
     "73786976296985690112, beyond the int64 the model computes in; the arithmetic would not be exact")),
    (("memory", "d"), 64, "\\[memory\\] names d, which the statement does not use; its operands are a, b, c"),
    (("memory", "b"), None, "\\[memory\\] is missing b \\(bytes of on-chip memory for every operand\\)"),
    (("memory", "a"), True, "\\[memory\\] a must be a whole number, got True"),
    (("memory", "a"), 0, "\\[memory\\] a must be >= 1, got 0"),
    (("memory", "a"), 65536.0, "\\[memory\\] a must be a whole number, got 65536.0"),
    (("memory", "c"), 511, "\\[memory\\] c = 511 bytes cannot hold one c tile \\(16x8 int32 = 512 bytes\\)"),
    (("dma", "bytes_per_cycle"), None, "\\[dma\\] is missing bytes_per_cycle"),
    (("dma", "burst"), 64, "unknown \\[dma\\] key\\(s\\) burst; expected bytes_per_cycle"),
    (("dma", "bytes_per_cycle"), False, "\\[dma\\] bytes_per_cycle must be a whole number, got False"),
    (("dma", "bytes_per_cycle"), -4, "\\[dma\\] bytes_per_cycle must be >= 1, got -4"),
    (("board",), {"clock": 1}, ("unknown table\\(s\\) board; a tile ISA file has accelerator, "
                               "intrinsic, dtypes, memory, dma")),
]


@pytest.mark.parametrize(("path", "value", "message"), REFUSALS,
                         ids=[f"{'.'.join(p)}={v!r}" for p, v, _ in REFUSALS])
def test_every_refusal_names_the_file_and_the_key(path, value, message):
    doc = doc_with(path, value, drop=value is None)
    with pytest.raises(IsaError, match=f"^x\\.toml: {message}"):
        tile_from_dict(doc, "x.toml")


def test_a_document_that_is_not_a_table_is_refused():
    with pytest.raises(IsaError, match=r"^x\.toml: an ISA file must be a table of tables, got list$"):
        tile_from_dict([], "x.toml")


def test_a_missing_or_malformed_file_is_refused(tmp_path):
    with pytest.raises(IsaError, match=r"does not exist"):
        load_tile(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[accelerator\n")
    with pytest.raises(IsaError, match=r"bad\.toml: not valid TOML"):
        load_tile(bad)
