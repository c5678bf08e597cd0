"""Accelerator descriptions: the shipped TOML files and every way a description can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedcsp.accelerator import accelerator_from_dict, load_accelerator
from embedcsp.errors import IsaError
from embedcsp.targets.vta.config import (
    MEM_ACC,
    MEM_ACC_8BIT,
    MEM_INP,
    MEM_OUT,
    MEM_UOP,
    MEM_WGT,
    VtaConfig,
    vta_accelerator,
)

ISA = Path(__file__).resolve().parents[1] / "isa"

CONFIG = {
    "LOG_INP_WIDTH": 3, "LOG_WGT_WIDTH": 3, "LOG_ACC_WIDTH": 5, "LOG_BATCH": 0, "LOG_BLOCK_IN": 4,
    "LOG_BLOCK_OUT": 4, "LOG_UOP_BUFF_SIZE": 15, "LOG_INP_BUFF_SIZE": 15, "LOG_WGT_BUFF_SIZE": 18,
    "LOG_ACC_BUFF_SIZE": 17,
}
STATEMENT = "acc[b,o] += inp[b,i] * wgt[o,i]"
LANES = '{ b = "BATCH", o = "BLOCK_OUT", i = "BLOCK_IN" }'


def toml_text(family="vta", config=None, statement=STATEMENT, lanes=LANES, extra="") -> str:
    config = CONFIG if config is None else config
    body = "\n".join(f"{k} = {v}" for k, v in config.items())
    return (f'[accelerator]\nname = "test"\nfamily = "{family}"\n\n[vta_config]\n{body}\n\n'
            f'[intrinsic]\nstatement = "{statement}"\nlanes = {lanes}\n{extra}')


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "acc.toml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- the shipped descriptions

def test_default_description():
    acc = load_accelerator()
    assert acc.name == "vta" and acc.family == "vta"
    cfg = acc.config
    assert cfg == VtaConfig()
    assert (cfg.batch, cfg.block_in, cfg.block_out) == (1, 16, 16)
    assert {m: cfg.depth(m) for m in (MEM_UOP, MEM_INP, MEM_WGT, MEM_ACC, MEM_OUT)} == {
        MEM_UOP: 8192, MEM_INP: 2048, MEM_WGT: 1024, MEM_ACC: 2048, MEM_OUT: 2048}
    assert (cfg.log_uop_depth, cfg.log_inp_depth, cfg.log_wgt_depth, cfg.log_acc_depth) == (13, 11, 10, 11)
    assert (cfg.inp_elem_bytes, cfg.wgt_elem_bytes, cfg.acc_elem_bytes, cfg.out_elem_bytes) == (16, 256, 64, 16)
    assert [cfg.elem_bytes(m) for m in (MEM_UOP, MEM_WGT, MEM_INP, MEM_ACC, MEM_OUT, MEM_ACC_8BIT)] == [
        4, 256, 16, 64, 16, 16]
    assert cfg.uop_src_bits == 11
    assert cfg.bitstream_tag() == "1x16_i8w8a32_15_15_18_17"
    assert acc.pattern.statement() == STATEMENT
    assert acc.pattern.extents == {"b": 1, "o": 16, "i": 16}
    assert acc.role_of == {"b": "row", "o": "col", "i": "red"}


def test_default_file_equals_packaged_default_and_python_api():
    from_file = load_accelerator(ISA / "vta.toml")
    packaged = load_accelerator()
    api = vta_accelerator()
    assert from_file.config == packaged.config == api.config == VtaConfig()
    assert from_file.pattern == packaged.pattern == api.pattern


def test_variant_description():
    acc = load_accelerator(ISA / "vta_b2_i8_o32.toml")
    cfg = acc.config
    assert acc.name == "vta-b2-i8-o32"
    assert (cfg.batch, cfg.block_in, cfg.block_out) == (2, 8, 32)
    assert {m: cfg.depth(m) for m in (MEM_UOP, MEM_INP, MEM_WGT, MEM_ACC)} == {
        MEM_UOP: 2048, MEM_INP: 512, MEM_WGT: 256, MEM_ACC: 256}
    # 2x8 int8, 32x8 int8, 2x32 int32, 2x32 int8
    assert (cfg.inp_elem_bytes, cfg.wgt_elem_bytes, cfg.acc_elem_bytes, cfg.out_elem_bytes) == (16, 256, 256, 64)
    assert cfg.uop_src_bits == 9
    assert cfg.bitstream_tag() == "2x8x32_i8w8a32_13_13_16_16"
    assert acc.pattern.extents == {"b": 2, "o": 32, "i": 8}
    same = vta_accelerator(cfg, name="v")
    assert same.config == cfg and same.pattern == acc.pattern


def test_pkg_config_shorthands(tmp_path):
    config = {k: v for k, v in CONFIG.items() if k not in ("LOG_BLOCK_IN", "LOG_BLOCK_OUT")}
    config.update(LOG_BLOCK=5, TARGET='"sim"', HW_VER='"0.0.2"')
    acc = load_accelerator(write(tmp_path, toml_text(config=config)))
    assert (acc.config.block_in, acc.config.block_out) == (32, 32)
    assert acc.pattern.extents == {"b": 1, "o": 32, "i": 32}
    assert acc.name == "test"


def test_numeric_lanes(tmp_path):
    acc = load_accelerator(write(tmp_path, toml_text(lanes="{ b = 1, o = 16, i = 16 }")))
    assert acc.pattern.extents == {"b": 1, "o": 16, "i": 16}


def test_renamed_dims_keep_their_roles(tmp_path):
    acc = load_accelerator(write(tmp_path, toml_text(
        statement="acc[n,m] += inp[n,k] * wgt[m,k]", lanes="{ n = 1, m = 16, k = 16 }")))
    assert acc.role_of == {"n": "row", "m": "col", "k": "red"}


# ---------------------------------------------------------------- malformed descriptions

def _without(key):
    return {k: v for k, v in CONFIG.items() if k != key}


BAD = {
    "toml_syntax": ("[accelerator\nfamily = vta\n", r"not valid TOML"),
    "unknown_section": (toml_text(extra="\n[memories]\nx = 1\n"), r"unknown section\(s\) memories"),
    "config_key_typo": (toml_text(config={**_without("LOG_INP_WIDTH"), "LOG_INP_WDITH": 3}),
                        r"unknown vta_config key\(s\) LOG_INP_WDITH; expected LOG_INP_WIDTH"),
    "missing_key": (toml_text(config=_without("LOG_ACC_BUFF_SIZE")),
                    r"vta_config is missing LOG_ACC_BUFF_SIZE"),
    "wrong_family": (toml_text(family="tpu"), r"unknown accelerator family 'tpu'; known: .*vta"),
    "no_family": (toml_text().replace('family = "vta"\n', ""),
                  r"\[accelerator\] family must name an accelerator family, got None"),
    "accelerator_not_a_table": ('accelerator = "vta"\n', r"needs an \[accelerator\] table"),
    "statement_unparseable": (toml_text(statement="acc = inp * wgt"),
                              r"is not of the form 'out\[x,y\] \+= a\[x,z\] \* b\[y,z\]'"),
    "wrong_vta_shape": (toml_text(statement="acc[b,o] += inp[b,i] * wgt[i,o]"),
                        r"VTA computes acc\[b,o\] \+= inp\[b,i\] \* wgt\[o,i\]; .* has another shape"),
    "wrong_operand_names": (toml_text(statement="out[b,o] += inp[b,i] * wgt[o,i]"),
                            r"must read 'inp' and 'wgt' into 'acc'"),
    "lane_extent_mismatch": (toml_text(lanes="{ b = 1, o = 16, i = 8 }"),
                             r"lane i has extent 8 but this vta_config gives 16"),
    "lane_name_unknown": (toml_text(lanes='{ b = "BATCH", o = "BLOCK", i = "BLOCK_IN" }'),
                          r"lane o = 'BLOCK': expected one of BATCH, BLOCK_IN, BLOCK_OUT"),
    "missing_statement": (toml_text().split("[intrinsic]")[0], r"\[intrinsic\] needs a 'statement'"),
    "inp_width_4": (toml_text(config={**CONFIG, "LOG_INP_WIDTH": 4}),
                    r"only int8 inputs/weights with int32 accumulators"),
    "inp_buffer_too_small": (toml_text(config={**CONFIG, "LOG_INP_BUFF_SIZE": 4}),
                             r"INP buffer holds fewer than 2 elements; raise LOG_INP_BUFF_SIZE"),
    "acc_buffer_too_small": (toml_text(config={**CONFIG, "LOG_ACC_BUFF_SIZE": 6}),
                             r"ACC buffer holds fewer than 2 elements"),
    "negative_value": (toml_text(config={**CONFIG, "LOG_BATCH": -1}),
                       r"LOG_BATCH must be a whole number >= 0, got -1"),
    "boolean_value": (toml_text(config={**CONFIG, "LOG_BATCH": "true"}),
                      r"LOG_BATCH must be a whole number >= 0, got True"),
    "micro_op_too_wide": (toml_text(config={**CONFIG, "LOG_ACC_BUFF_SIZE": 18}),
                          r"micro-op needs 34 bits"),
    "wgt_written_first": (toml_text(statement="acc[b,o] += wgt[o,i] * inp[b,i]"),
                          r"write the VTA intrinsic with inp first"),
    "boolean_lane": (toml_text(lanes="{ b = true, o = 16, i = 16 }"),
                     r"lane b must have a positive whole extent, got True"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_descriptions(tmp_path, case):
    text, message = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(IsaError, match=message):
        load_accelerator(path)


def test_missing_file(tmp_path):
    with pytest.raises(IsaError, match=r"does not exist"):
        load_accelerator(tmp_path / "nope.toml")


def test_accelerator_from_dict_reports_its_source():
    doc = {"accelerator": {"family": "vta"}, "vta_config": dict(CONFIG), "intrinsic": {"statement": "x"}}
    with pytest.raises(IsaError, match=r"intrinsic statement 'x' is not of the form"):
        accelerator_from_dict(doc, "mine.toml")
