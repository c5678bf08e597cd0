"""Gemmini configuration, command encoding and the model's own decoder (docs/gemmini.md 1-3).

Every expected word below is worked out by hand from docs/gemmini.md's
register tables and written as an integer literal, never computed by
embedcsp.targets.gemmini.commands; the section-7 stream is the specification's
own worked example, word for word.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from embedcsp.errors import IsaError, ProgramError
from embedcsp.targets.gemmini.commands import (
    GARBAGE,
    OS,
    WS,
    ComputeAccumulated,
    ComputePreloaded,
    ConfigEx,
    ConfigLd,
    ConfigSt,
    Flush,
    Mvin,
    Mvout,
    Preload,
    check_program,
    encode,
    encode_program,
    epilogue_readout,
    f32_bits,
    f32_value,
    kind_of,
    local_addr,
)
from embedcsp.targets.gemmini.config import (
    GemminiConfig,
    gemmini_config_from_dict,
    gemmini_config_from_toml,
    load_gemmini_config,
)
from embedcsp.targets.gemmini.decode import decode_command, decode_program, read_local
from embedcsp.targets.gemmini.model import run, run_program

ISA = Path(__file__).resolve().parents[1] / "isa"
CFG = GemminiConfig()
DIM8 = load_gemmini_config(ISA / "gemmini_dim8.toml")


# ---------------------------------------------------------------- configuration

def test_shipped_default_matches_section_1():
    cfg = load_gemmini_config(ISA / "gemmini.toml")
    assert cfg == CFG == load_gemmini_config()
    assert cfg.as_dict() == {"DIM": 16, "BANK_NUM": 4, "BANK_ROWS": 4096, "ACC_ROWS": 1024,
                             "MAX_BYTES": 64, "elem_t": "int8", "acc_t": "int32"}
    assert (cfg.sp_rows, cfg.acc_rows, cfg.sp_bytes, cfg.acc_capacity_bytes) == (16384, 1024, 262144, 65536)
    assert (cfg.max_block_len, cfg.max_block_len_acc) == (4, 1)
    assert (cfg.max_cols_elem, cfg.max_cols_acc, cfg.max_cols_full_mvout) == (64, 16, 16)
    assert (cfg.rows_bits, cfg.cols_bits, cfg.sp_addr_bits, cfg.acc_addr_bits) == (5, 7, 14, 10)


def test_dim8_variant_derivations():
    assert DIM8.as_dict() == {"DIM": 8, "BANK_NUM": 2, "BANK_ROWS": 4096, "ACC_ROWS": 512,
                              "MAX_BYTES": 64, "elem_t": "int8", "acc_t": "int32"}
    assert (DIM8.sp_rows, DIM8.acc_rows) == (8192, 512)
    assert (DIM8.max_block_len, DIM8.max_block_len_acc) == (8, 2)
    # An int32 mvin may span two 8-column blocks, a full-width mvout only one.
    assert (DIM8.max_cols_elem, DIM8.max_cols_acc, DIM8.max_cols_full_mvout) == (64, 16, 8)
    assert (DIM8.rows_bits, DIM8.cols_bits, DIM8.sp_addr_bits, DIM8.acc_addr_bits) == (4, 7, 13, 9)


GOOD = {"DIM": 16, "BANK_NUM": 4, "BANK_ROWS": 4096, "ACC_ROWS": 1024, "MAX_BYTES": 64,
        "elem_t": "int8", "acc_t": "int32"}


@pytest.mark.parametrize("change, words", [
    ({"DIM": "16"}, "DIM must be a whole number"),
    ({"DIM": 16.0}, "DIM must be a whole number"),
    ({"BANK_NUM": True}, "BANK_NUM must be a whole number"),
    ({"ACC_ROWS": 0}, "ACC_ROWS must be >= 1"),
    ({"DIM": 12}, "DIM must be a power of two"),
    ({"DIM": 1}, "DIM must be a power of two >= 2"),
    ({"DIM": 128}, "DIM = 128"),
    ({"BANK_ROWS": 100}, "BANK_ROWS must be a power of two"),
    ({"BANK_ROWS": 8}, "multiple of DIM"),
    ({"BANK_NUM": 3}, "BANK_NUM must be a power of two"),
    ({"ACC_ROWS": 1000}, "ACC_ROWS must be a power of two"),
    ({"MAX_BYTES": 128}, "MAX_BYTES must be 64"),
    ({"elem_t": "float32"}, "elem_t = 'float32' is not supported"),
    ({"acc_t": 32}, "acc_t must be a string"),
    ({"BANK_ROWS": 1 << 25}, "BANK_NUM \\* BANK_ROWS = 134217728"),
])
def test_config_refusals_name_the_key(change, words):
    with pytest.raises(IsaError, match=words) as info:
        gemmini_config_from_dict({**GOOD, **change}, "x.toml")
    assert str(info.value).startswith("x.toml: ")


def test_config_unknown_and_missing_keys():
    with pytest.raises(IsaError, match="unknown gemmini_config key.*LOG_DIM"):
        gemmini_config_from_dict({**GOOD, "LOG_DIM": 4}, "x.toml")
    table = dict(GOOD)
    del table["ACC_ROWS"]
    with pytest.raises(IsaError, match="missing ACC_ROWS"):
        gemmini_config_from_dict(table, "x.toml")
    with pytest.raises(IsaError, match="must be a table"):
        gemmini_config_from_dict([1, 2], "x.toml")


def test_config_document_and_files(tmp_path):
    doc = {"accelerator": {"name": "g", "family": "gemmini"}, "gemmini_config": GOOD}
    assert gemmini_config_from_toml(doc, "d") == CFG
    with pytest.raises(IsaError, match="family must be 'gemmini'.*'vta'"):
        gemmini_config_from_toml({"accelerator": {"family": "vta"}, "gemmini_config": GOOD}, "d")
    with pytest.raises(IsaError, match="needs a \\[gemmini_config\\]"):
        gemmini_config_from_toml({"accelerator": {"family": "gemmini"}}, "d")
    bad = tmp_path / "bad.toml"
    bad.write_text("[accelerator\n")
    with pytest.raises(IsaError, match="not valid TOML"):
        load_gemmini_config(bad)
    with pytest.raises(IsaError, match="does not exist"):
        load_gemmini_config(tmp_path / "missing.toml")


# ---------------------------------------------------------------- scalars and local addresses

def test_float32_bits_and_local_addresses():
    assert f32_bits(1.0) == 0x3F800000
    assert f32_bits(0.5) == 0x3F000000
    assert f32_bits(2.0**-19) == 0x36000000
    assert f32_value(0x3F800000) == 1.0
    for bad in (0.1, float("nan"), float("inf"), 1e39):
        with pytest.raises(ValueError, match="scale"):
            f32_bits(bad)
    assert local_addr(5) == 0x00000005
    assert local_addr(5, acc=True) == 0x80000005
    assert local_addr(5, acc=True, accumulate=True) == 0xC0000005
    assert local_addr(5, acc=True, read_full=True) == 0xA0000005
    with pytest.raises(ValueError, match="only for accumulator"):
        local_addr(5, accumulate=True)
    with pytest.raises(ValueError, match="26-bit row field"):
        local_addr(1 << 26)
    loc = read_local(0xE0000007)
    assert (loc.acc, loc.accumulate, loc.read_full, loc.norm, loc.row, loc.garbage) == (
        True, True, True, 0, 7, False)
    assert read_local(0xFFFFFFFF).garbage and read_local(0x1C000003).norm == 7


# ---------------------------------------------------------------- hand-worked encodings

HAND = [
    # config_ex OS, ReLU, transpose A, a_stride 3, acc scale 1.0; rs2 shift 7, c_stride 1.
    # rs1 = 0x3F800000<<32 | 3<<16 | 1<<8 | 1<<3 | 0<<2 | 0.
    (ConfigEx(dataflow=OS, activation=1, a_transpose=True, a_stride=3, sys_shift=7, c_stride=1),
     0, 0x3F80000000030108, 0x0001000000000007),
    # config_ex WS, strides only, transpose B, a_stride 2, scale 2.0 (0x40000000), c_stride 4.
    # rs1 = 0x40000000<<32 | 2<<16 | 1<<9 | 1<<7 | 1<<2.
    (ConfigEx(dataflow=WS, set_only_strides=True, b_transpose=True, a_stride=2,
              acc_scale_bits=0x40000000, c_stride=4),
     0, 0x4000000000020284, 0x0004000000000000),
    # config_ld slot 2, shrink, block stride 32, one pixel repeat, scale 0.5; stride 0x1234 bytes.
    # rs1 = 0x3F000000<<32 | 32<<16 | 1<<8 | 2<<3 | 1<<2 | 1.
    (ConfigLd(slot=2, stride=0x1234, block_stride=32, scale_bits=0x3F000000, shrink=True),
     0, 0x3F00000000200115, 0x0000000000001234),
    # config_ld slot 0 with a 64-bit stride: rs2 holds all 64 bits.
    (ConfigLd(slot=0, stride=0x123456789ABCDEF0, block_stride=16),
     0, 0x3F80000000100101, 0x123456789ABCDEF0),
    # config_st ReLU, stride 64, scale 2^-19 (0x36000000): rs1 = 1<<2 | 2.
    (ConfigSt(stride=64, activation=1, scale_bits=0x36000000), 0, 0x0000000000000006,
     0x3600000000000040),
    # mvin (funct 2): 8 rows x 40 cols into scratchpad row 100 from 0x1000.
    (Mvin(dram_addr=0x1000, addr=100, rows=8, cols=40, slot=0), 2, 0x1000, 0x0008002800000064),
    # mvin2 (funct 1): 16 x 64 into scratchpad row 0x3FF0.
    (Mvin(dram_addr=0xDEAD0000, addr=0x3FF0, rows=16, cols=64, slot=1), 1, 0xDEAD0000,
     0x0010004000003FF0),
    # mvin3 (funct 14): 16 x 16 int32 accumulated onto accumulator row 5.
    (Mvin(dram_addr=0x80001200, addr=0xC0000005, rows=16, cols=16, slot=2), 14, 0x80001200,
     0x00100010C0000005),
    # mvin from address 0 (zeros) into accumulator row 0x3FF.
    (Mvin(dram_addr=0, addr=0x800003FF, rows=1, cols=1, slot=0), 2, 0, 0x00010001800003FF),
    # mvout (funct 3): 4 rows x 16 full-width cols of accumulator row 3.
    (Mvout(dram_addr=0x2000, addr=0xA0000003, rows=4, cols=16), 3, 0x2000, 0x00040010A0000003),
    # mvout of scratchpad row 7, 16 x 64 int8.
    (Mvout(dram_addr=0x3000, addr=7, rows=16, cols=64), 3, 0x3000, 0x0010004000000007),
    # preload (funct 6): B at scratchpad 0x20 16x16; C into accumulator row 0x10, 12 x 10.
    (Preload(bd_addr=0x20, bd_rows=16, bd_cols=16, c_addr=0x80000010, c_rows=12, c_cols=10),
     6, 0x0010001000000020, 0x000C000A80000010),
    # preload with GARBAGE both ways.
    (Preload(bd_addr=GARBAGE, bd_rows=1, bd_cols=2, c_addr=GARBAGE, c_rows=3, c_cols=4),
     6, 0x00010002FFFFFFFF, 0x00030004FFFFFFFF),
    # compute_preloaded (funct 4): A at 0x40, 12 x 16; D GARBAGE 16 x 16.
    (ComputePreloaded(a_addr=0x40, a_rows=12, a_cols=16, x_addr=GARBAGE, x_rows=16, x_cols=16),
     4, 0x000C001000000040, 0x00100010FFFFFFFF),
    # compute_accumulated (funct 5): A at 0x50 16 x 16; B/D at 0x60, 16 x 8.
    (ComputeAccumulated(a_addr=0x50, a_rows=16, a_cols=16, x_addr=0x60, x_rows=16, x_cols=8),
     5, 0x0010001000000050, 0x0010000800000060),
    # flush (funct 7): skip the faulting request.
    (Flush(skip=True), 7, 1, 0),
    (Flush(), 7, 0, 0),
]


@pytest.mark.parametrize("cmd, funct, rs1, rs2", HAND,
                         ids=[f"{kind_of(h[0])}-{i}" for i, h in enumerate(HAND)])
def test_hand_worked_encodings(cmd, funct, rs1, rs2):
    assert encode(cmd, CFG) == (funct, rs1, rs2)
    assert decode_command(funct, rs1, rs2) == cmd


def test_program_layout_is_three_little_endian_words():
    raw = encode_program([Flush(skip=True), ConfigSt(stride=16)], CFG)
    assert raw == bytes([7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                         0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
                         0x10, 0, 0, 0, 0, 0, 0x80, 0x3F])


# ---------------------------------------------------------------- section 7: the worked example

BASE7 = 0x80001000
SECTION7 = [  # (command, funct, rs1, rs2) exactly as docs/gemmini.md section 7 tabulates them
    (Flush(), 7, 0x0000000000000000, 0x0000000000000000),
    (ConfigEx(dataflow=WS, a_stride=1, c_stride=1), 0, 0x3F80000000010004, 0x0001000000000000),
    (ConfigLd(slot=0, stride=16, block_stride=16), 0, 0x3F80000000100101, 0x0000000000000010),
    (ConfigLd(slot=1, stride=16, block_stride=16), 0, 0x3F80000000100109, 0x0000000000000010),
    (ConfigLd(slot=2, stride=64, block_stride=16), 0, 0x3F80000000100111, 0x0000000000000040),
    (ConfigSt(stride=16), 0, 0x0000000000000002, 0x3F80000000000010),
    (Mvin(0x80001000, 0x00000000, 16, 16, slot=0), 2, 0x0000000080001000, 0x0010001000000000),
    (Mvin(0x80001100, 0x00000010, 16, 16, slot=1), 1, 0x0000000080001100, 0x0010001000000010),
    (Mvin(0x80001200, 0x80000000, 16, 16, slot=2), 14, 0x0000000080001200, 0x0010001080000000),
    (Preload(0x10, 16, 16, 0xC0000000, 16, 16), 6, 0x0010001000000010, 0x00100010C0000000),
    (ComputePreloaded(0x0, 16, 16, GARBAGE, 16, 16), 4, 0x0010001000000000, 0x00100010FFFFFFFF),
    (Mvout(0x80001600, 0x80000000, 16, 16), 3, 0x0000000080001600, 0x0010001080000000),
]


def test_section7_stream_encodes_word_for_word():
    cmds = [c for c, *_ in SECTION7]
    assert [encode(c, CFG) for c in cmds] == [tuple(w) for _, *w in SECTION7]
    raw = encode_program(cmds, CFG)
    assert len(raw) == 24 * len(cmds)
    assert raw == b"".join(struct.pack("<3Q", *w) for _, *w in SECTION7)
    assert decode_program(raw) == cmds
    # The instruction words of section 7 (rs1 = a0, rs2 = a1) carry the same funct7.
    words = {7: 0x0EB5307B, 0: 0x00B5307B, 2: 0x04B5307B, 1: 0x02B5307B, 14: 0x1CB5307B,
             6: 0x0CB5307B, 4: 0x08B5307B, 3: 0x06B5307B}
    for _, funct, _, _ in SECTION7:
        assert (funct << 25) | 0x00B5307B == words[funct]


def test_section7_runs_as_clamp_of_d_plus_ab():
    rng = np.random.default_rng(7)
    a = rng.integers(-128, 128, (16, 16), dtype=np.int8)
    b = rng.integers(-128, 128, (16, 16), dtype=np.int8)
    d = rng.integers(-40000, 40000, (16, 16)).astype("<i4")
    # Row 0 of D nearly cancels A.B, so some outputs land inside int8 and are not clamped.
    d[0] = -(a[0].astype(np.int64) @ b.astype(np.int64)) + rng.integers(-100, 100, 16)
    dram = np.zeros(0x700, np.uint8)
    dram[0x000:0x100] = a.view(np.uint8).ravel()
    dram[0x100:0x200] = b.view(np.uint8).ravel()
    dram[0x200:0x600] = d.view(np.uint8).ravel()
    raw = b"".join(struct.pack("<3Q", *w) for _, *w in SECTION7)
    out, counters = run_program(raw, dram, BASE7, CFG)
    c = out[0x600:0x700].view(np.int8).reshape(16, 16)
    sums = d.astype(np.int64) + a.astype(np.int64) @ b.astype(np.int64)
    expected = np.clip(sums, -128, 127)
    assert np.array_equal(c, expected)
    assert np.any(expected == 127) and np.any(expected == -128) and np.any(np.abs(expected) < 127)
    assert np.array_equal(out[:0x600], dram[:0x600])  # the inputs are untouched
    assert counters.commands["mvin3"] == 1 and counters.commands["compute_preloaded"] == 1
    assert counters.load_bytes == 256 + 256 + 1024 and counters.store_bytes == 256
    assert counters.macs == 16 * 16 * 16


# ---------------------------------------------------------------- decode

def test_round_trip_of_a_mixed_program():
    cmds = [c for c, *_ in HAND]
    raw = b"".join(struct.pack("<3Q", *encode(c, CFG)) for c in cmds)
    assert decode_program(raw) == cmds


@pytest.mark.parametrize("funct, rs1, rs2, words", [
    (8, 0, 0, "funct7 8 is not a command"),        # LOOP_WS
    (126, 0, 0, "funct7 126"),                      # counters
    (127, 0, 0, "funct7 127"),                      # the model's fence
    (22, 0, 0, "funct7 22"),                        # RTL-only clock gating
    (128, 0, 0, "does not fit 7 bits"),
    (0, 3, 0, "config_norm"),
    (0, 0b10 | 1 << 4, 0, "pooling"),               # config_st pool stride 1
    (0, 0b10 | 1 << 24, 0, "pooling"),              # pool_out_dim
    (0, 0b01 | 2 << 8, 16, "pixel repeats"),
    (0, 0b01 | 1 << 5, 16, "config_ld rs1 \\[7:5\\]"),
    (0, 0b00 | 1 << 5, 0, "config_ex rs1 \\[6:5\\]"),
    (0, 0b00 | 1 << 10, 0, "config_ex rs1 \\[15:10\\]"),
    (0, 0, 1 << 32, "relu6_shift"),
    (7, 2, 0, "flush rs1"),
    (7, 0, 1, "flush rs2"),
])
def test_decoder_refuses_what_the_subset_lacks(funct, rs1, rs2, words):
    with pytest.raises(ValueError, match=words):
        decode_command(funct, rs1, rs2)


def test_decoder_reads_zero_pixel_repeats_as_one_and_whole_entries_only():
    assert decode_command(0, 0b01, 16) == ConfigLd(slot=0, stride=16, block_stride=0, scale_bits=0)
    with pytest.raises(ValueError, match="25 bytes, not a whole number of 24-byte"):
        decode_program(bytes(25))
    with pytest.raises(ValueError, match="command 1: funct7 9"):
        decode_program(struct.pack("<3Q", 7, 0, 0) + struct.pack("<3Q", 9, 0, 0))
    with pytest.raises(ProgramError, match="program.bin: command 0: funct7 8"):
        run_program(struct.pack("<3Q", 8, 0, 0), np.zeros(16, np.uint8), 4096, CFG)


def test_decoded_fields_that_do_not_fit_are_refused_by_the_model():
    # slot 3 decodes (the field is two bits) but no such slot exists.
    cmd = decode_command(0, 0b01 | 3 << 3 | 1 << 8, 16)
    assert cmd.slot == 3
    with pytest.raises(ProgramError, match="load slot 3"):
        run([cmd], np.zeros(16, np.uint8), 4096, CFG)


# ---------------------------------------------------------------- range checks, one by one

ACC0 = 0x80000000
RANGE = [
    (ConfigEx(dataflow=2), "ConfigEx.dataflow=2"),
    (ConfigEx(activation=2), "ConfigEx.activation=2"),
    (ConfigEx(dataflow=OS, b_transpose=True), "not B alone"),
    (ConfigEx(dataflow=WS, a_transpose=True, b_transpose=True), "not both"),
    (ConfigEx(set_only_strides=True, a_transpose=True, b_transpose=True), "not both"),
    (ConfigEx(sys_shift=32), "ConfigEx.sys_shift=32"),
    (ConfigEx(a_stride=1 << 16), "ConfigEx.a_stride=65536 does not fit 16 bits"),
    (ConfigEx(c_stride=-1), "ConfigEx.c_stride=-1 does not fit 16 bits"),
    (ConfigEx(set_only_strides=2), "ConfigEx.set_only_strides=2 is not a flag"),
    (ConfigEx(acc_scale_bits=0x7FC00000), "NaN/Inf"),
    (ConfigLd(slot=3, stride=0, block_stride=16), "ConfigLd.slot=3"),
    (ConfigLd(slot=0, stride=1 << 64, block_stride=16), "ConfigLd.stride=.* does not fit 64 bits"),
    (ConfigLd(slot=0, stride=16, block_stride=1 << 16), "ConfigLd.block_stride=65536"),
    (ConfigLd(slot=0, stride=16, block_stride=16, scale_bits=0x7F800000), "NaN/Inf"),
    (ConfigLd(slot=0, stride=16, block_stride=16, scale_bits=0x4F800000), "below 2\\^32"),
    (ConfigLd(slot=0, stride=16, block_stride=16, scale_bits=1 << 32), "does not fit 32 bits"),
    (ConfigSt(stride=1 << 32), "ConfigSt.stride=4294967296 does not fit 32 bits"),
    (ConfigSt(stride=16, activation=3), "ConfigSt.activation=3"),
    (ConfigSt(stride=16, scale_bits=0xFFFFFFFF), "NaN/Inf"),
    (Mvin(16, 0, rows=0, cols=16), "Mvin.rows=0 is outside 1..16"),
    (Mvin(16, 0, rows=17, cols=16), "Mvin.rows=17 is outside 1..16"),
    (Mvin(16, 0, rows=16, cols=0), "Mvin.cols=0 is outside 1..64"),
    (Mvin(16, 0, rows=16, cols=65), "Mvin.cols=65 is outside 1..64"),
    (Mvin(16, 0, 16, 16, slot=3), "Mvin.slot=3"),
    (Mvin(-1, 0, 16, 16), "Mvin.dram_addr=-1"),
    (Mvin(1 << 64, 0, 16, 16), "Mvin.dram_addr=.* does not fit 64 bits"),
    (Mvin(16, GARBAGE, 16, 16), "GARBAGE, which is no mvin/mvout address"),
    (Mvin(16, 0x40000000, 16, 16), "accumulate bit"),
    (Mvin(16, 0xA0000000, 16, 16), "read-full bit"),
    (Mvin(16, 0x04000000, 16, 16), "bits 28:26"),
    (Mvin(16, 16384, 16, 16), "row 16384 is beyond the scratchpad's 16384 rows"),
    (Mvin(16, ACC0 | 1024, 16, 16), "row 1024 is beyond the accumulator's 1024 rows"),
    (Mvin(16, 1 << 32, 16, 16), "Mvin.addr=.* does not fit 32 bits"),
    (Mvout(16, GARBAGE, 16, 16), "GARBAGE, which is no mvin/mvout address"),
    (Mvout(16, 0xA0000000, 16, 17), "Mvout.cols=17 is outside 1..16"),
    (Mvout(16, 0x80000000, 16, 65), "Mvout.cols=65 is outside 1..64"),
    (Mvout(16, 0x20000000, 16, 16), "read-full bit"),
    (Mvout(16, 0xC0000000, 16, 16), "accumulate bit"),
    (Mvout(16, 0x80000000, 17, 16), "Mvout.rows=17"),
    (Preload(0x80000000, 16, 16, GARBAGE, 16, 16), "accumulator address; A, B and D come from"),
    (Preload(0, 17, 16, GARBAGE, 16, 16), "Preload.bd_rows=17"),
    (Preload(0, 16, 0, GARBAGE, 16, 16), "Preload.bd_cols=0"),
    (Preload(0, 16, 16, 0xA0000000, 16, 16), "read-full bit"),
    (Preload(0, 16, 16, 0x40000000, 16, 16), "accumulate bit"),
    (Preload(0, 16, 16, GARBAGE, 17, 16), "Preload.c_rows=17"),
    (Preload(0, 16, 16, GARBAGE, 16, 17), "Preload.c_cols=17"),
    (ComputePreloaded(0, 0, 16, GARBAGE, 16, 16), "ComputePreloaded.a_rows=0"),
    (ComputePreloaded(0, 16, 17, GARBAGE, 16, 16), "ComputePreloaded.a_cols=17"),
    (ComputeAccumulated(0, 16, 16, ACC0, 16, 16), "accumulator address"),
    (ComputeAccumulated(0, 16, 16, 0, 16, 99), "ComputeAccumulated.x_cols=99"),
    (ComputeAccumulated(16384, 16, 16, 0, 16, 16), "row 16384 is beyond"),
    (Flush(skip=2), "Flush.skip=2 is not a flag"),
]


@pytest.mark.parametrize("cmd, words", RANGE, ids=[f"{kind_of(r[0])}-{i}" for i, r in enumerate(RANGE)])
def test_every_range_check(cmd, words):
    with pytest.raises(ValueError, match=words):
        encode(cmd, CFG)


def test_range_checks_follow_the_config():
    assert encode(Mvin(16, 0, rows=8, cols=64), DIM8)[0] == 2
    with pytest.raises(ValueError, match="Mvin.rows=9 is outside 1..8"):
        encode(Mvin(16, 0, rows=9, cols=8), DIM8)
    with pytest.raises(ValueError, match="Mvout.cols=9 is outside 1..8"):
        encode(Mvout(16, 0xA0000000, rows=8, cols=9), DIM8)  # full width: one block only
    with pytest.raises(ValueError, match="row 512 is beyond the accumulator's 512 rows"):
        encode(Mvout(16, ACC0 | 512, rows=8, cols=8), DIM8)
    with pytest.raises(ValueError, match="row 8192 is beyond the scratchpad's 8192 rows"):
        encode(Preload(8192, 8, 8, GARBAGE, 8, 8), DIM8)


def test_checks_across_commands():
    ld = ConfigLd(slot=0, stride=64, block_stride=16)
    check_program([ld, Mvin(16, 0, 16, 64)], CFG)
    with pytest.raises(ValueError, match="command 0 \\(mvin2\\): load slot 1 is used before"):
        check_program([Mvin(16, 0, 16, 16, slot=1)], CFG)
    with pytest.raises(ValueError, match="Mvin.rows=16 exceeds the slot's block_stride=8"):
        check_program([ConfigLd(slot=0, stride=64, block_stride=8), Mvin(16, 0, 16, 16)], CFG)
    with pytest.raises(ValueError, match="Mvin.cols=17 of int32 exceed one 64-byte request"):
        check_program([ld, Mvin(16, ACC0, 16, 17)], CFG)
    # Shrunk accumulator mvins read int8 from DRAM, so 64 columns fit one request.
    check_program([ConfigLd(slot=0, stride=64, block_stride=16, shrink=True),
                   Mvin(16, ACC0, 16, 64)], CFG)
    with pytest.raises(ValueError, match="writes up to local row 16399"):
        check_program([ld, Mvin(16, 16384 - 16, 16, 32)], CFG)  # the second block is past the end
    with pytest.raises(ValueError, match="mvout before any config_st"):
        check_program([Mvout(16, 0, 16, 16)], CFG)
    with pytest.raises(ValueError, match="before any config_ex"):
        check_program([Preload(0, 16, 16, GARBAGE, 16, 16)], CFG)
    with pytest.raises(ValueError, match="before any config_ex"):  # strides only: no dataflow yet
        check_program([ConfigEx(set_only_strides=True),
                       ComputePreloaded(0, 16, 16, GARBAGE, 16, 16)], CFG)
    with pytest.raises(ValueError, match="load slot 2 is used before"):
        encode_program([Mvin(16, 0, 16, 16, slot=2)], CFG)


# ---------------------------------------------------------------- epilogues

def test_epilogue_readouts():
    assert epilogue_readout({"kind": "saturate"}) == (0x3F800000, False)
    assert epilogue_readout({"kind": "int32"}) == (0x3F800000, True)
    assert epilogue_readout({"kind": "requant", "shift": 19, "rounding": "nearest_even"}) == (
        0x36000000, False)
    assert epilogue_readout({"kind": "requant", "shift": 0}) == (0x3F800000, False)
    assert epilogue_readout({"kind": "requant", "shift": 31}) == (0x30000000, False)
    with pytest.raises(ValueError, match="'wrap' epilogue"):
        epilogue_readout({"kind": "wrap"})
    with pytest.raises(ValueError, match="rounding 'floor' is not available"):
        epilogue_readout({"kind": "requant", "shift": 3, "rounding": "floor"})
    with pytest.raises(ValueError, match="within 0..31"):
        epilogue_readout({"kind": "requant", "shift": 32})
    with pytest.raises(ValueError, match="unknown epilogue kind"):
        epilogue_readout({"kind": "relu"})
