"""Instruction and micro-op encoding, bit for bit (docs/vta.md section 2).

The bit positions below are written out by hand from docs/vta.md's tables (and, for
the variant, by applying the C-bitfield rule "a field never straddles bit 64"
by hand), never read back from embedcsp.targets.vta.encoding.layouts.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedcsp.accelerator import load_accelerator
from embedcsp.errors import IsaError
from embedcsp.targets.vta.config import VtaConfig, validate_config
from embedcsp.targets.vta.encoding import (
    OP_ALU,
    OP_FINISH,
    OP_GEMM,
    OP_LOAD,
    OP_STORE,
    AluInsn,
    Deps,
    FinishInsn,
    GemmInsn,
    MemInsn,
    decode,
    decode_program,
    decode_uops,
    encode,
    encode_program,
    encode_uops,
)

ISA = Path(__file__).resolve().parents[1] / "isa"
DEFAULT = VtaConfig()
VARIANT = load_accelerator(ISA / "vta_b2_i8_o32.toml").config


def bits(msb: int, lsb: int) -> tuple[int, int]:
    """docs/vta.md writes fields as [msb:lsb]; return (lsb, width)."""
    return lsb, msb - lsb + 1


HEADER = {"pop_prev": bits(3, 3), "pop_next": bits(4, 4), "push_prev": bits(5, 5), "push_next": bits(6, 6)}

MEM = {  # docs/vta.md section 2; identical for every config (fixed hw_spec_const.h widths)
    "memory_type": bits(9, 7), "sram_base": bits(25, 10), "dram_base": bits(57, 26),
    "y_size": bits(79, 64), "x_size": bits(95, 80), "x_stride": bits(111, 96),
    "y_pad_0": bits(115, 112), "y_pad_1": bits(119, 116), "x_pad_0": bits(123, 120),
    "x_pad_1": bits(127, 124),
}

LOOP_DEFAULT = {  # docs/vta.md section 2
    "reset": bits(7, 7), "uop_bgn": bits(20, 8), "uop_end": bits(34, 21), "iter_out": bits(48, 35),
    "iter_in": bits(62, 49), "dst_factor_out": bits(74, 64), "dst_factor_in": bits(85, 75),
    "src_factor_out": bits(96, 86), "src_factor_in": bits(107, 97),
}
GEMM_DEFAULT = {**LOOP_DEFAULT, "wgt_factor_out": bits(117, 108), "wgt_factor_in": bits(127, 118)}
ALU_DEFAULT = {**LOOP_DEFAULT, "alu_opcode": bits(110, 108), "use_imm": bits(111, 111),
               "imm": bits(127, 112)}
UOP_DEFAULT = {"dst": bits(10, 0), "src": bits(21, 11), "wgt": bits(31, 22)}

# Variant (BATCH 2, BLOCK_IN 8, BLOCK_OUT 32): depths uop 2^11, inp 2^9, wgt 2^8, acc 2^8.
# Word 0: reset 7, uop_bgn 11 bits, uop_end 12, iter_out 14, iter_in 14 -> ends at bit 58;
# dst_factor_out (8 bits) would straddle bit 64, so word 1 starts with it.
LOOP_VARIANT = {
    "reset": bits(7, 7), "uop_bgn": bits(18, 8), "uop_end": bits(30, 19), "iter_out": bits(44, 31),
    "iter_in": bits(58, 45), "dst_factor_out": bits(71, 64), "dst_factor_in": bits(79, 72),
    "src_factor_out": bits(88, 80), "src_factor_in": bits(97, 89),
}
GEMM_VARIANT = {**LOOP_VARIANT, "wgt_factor_out": bits(105, 98), "wgt_factor_in": bits(113, 106)}
# The ALU's source factors index ACC, so they are 8 bits here, not INP's 9 (docs/vta.md section 2, ALU layout).
ALU_VARIANT = {**LOOP_VARIANT, "src_factor_out": bits(87, 80), "src_factor_in": bits(95, 88),
               "alu_opcode": bits(98, 96), "use_imm": bits(99, 99), "imm": bits(115, 100)}
UOP_VARIANT = {"dst": bits(7, 0), "src": bits(16, 8), "wgt": bits(24, 17)}  # src = max(8, 9) bits

TABLES = {
    "default": (DEFAULT, GEMM_DEFAULT, ALU_DEFAULT, UOP_DEFAULT),
    "variant": (VARIANT, GEMM_VARIANT, ALU_VARIANT, UOP_VARIANT),
}


def pack(opcode: int, table: dict[str, tuple[int, int]], values: dict[str, int]) -> bytes:
    """The expected 128-bit word, built field by field."""
    word = opcode
    for name, (lsb, width) in table.items():
        v = int(values.get(name, 0))
        if name == "imm":
            v &= 0xFFFF
        assert 0 <= v < (1 << width)
        word |= v << lsb
    assert word < 1 << 128
    return word.to_bytes(16, "little")


def random_deps(rng) -> dict[str, bool]:
    return {k: bool(rng.integers(2)) for k in HEADER}


def random_fields(rng, table, skip=()) -> dict[str, int]:
    out = {}
    for name, (_, width) in table.items():
        if name in skip:
            continue
        out[name] = int(rng.integers(0, 1 << width))
    return out


# ---------------------------------------------------------------- hand-checked examples

def test_load_bit_positions_default():
    insn = MemInsn(OP_LOAD, memory_type=2, sram_base=0xBEEF, dram_base=0xDEADBEEF, y_size=0x1234,
                   x_size=0xFEDC, x_stride=0x0F0F, y_pad_0=0x1, y_pad_1=0x2, x_pad_0=0x3, x_pad_1=0xF,
                   deps=Deps(push_next=True))
    word = (0 | 1 << 6 | 2 << 7 | 0xBEEF << 10 | 0xDEADBEEF << 26 | 0x1234 << 64 | 0xFEDC << 80
            | 0x0F0F << 96 | 0x1 << 112 | 0x2 << 116 | 0x3 << 120 | 0xF << 124)
    assert encode(insn, DEFAULT) == word.to_bytes(16, "little")
    assert decode(word.to_bytes(16, "little"), DEFAULT) == insn
    # bits [63:58] are a gap: nothing is ever encoded there
    assert (word >> 58) & 0x3F == 0


def test_load_bytes_literal():
    # LOAD INP, sram 1, dram 2, y 3, x 4, stride 5, all pads 6/7/8/9, pop_next
    insn = MemInsn(OP_LOAD, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, Deps(pop_next=True))
    # word0 = 0b10000 | 2<<7 | 1<<10 | 2<<26 = 0x10 + 0x100 + 0x400 + 0x8000000 = 0x08000510
    # word1 = 3 | 4<<16 | 5<<32 | 6<<48 | 7<<52 | 8<<56 | 9<<60 = 0x9876000500040003
    assert encode(insn, DEFAULT) == bytes.fromhex("1005000800000000" "0300040005007698")


def test_store_bit_positions_default():
    insn = MemInsn(OP_STORE, 4, 7, 9, 2, 3, 5, deps=Deps(pop_prev=True, push_prev=True))
    word = 1 | 1 << 3 | 1 << 5 | 4 << 7 | 7 << 10 | 9 << 26 | 2 << 64 | 3 << 80 | 5 << 96
    assert encode(insn, DEFAULT) == word.to_bytes(16, "little")


def test_gemm_bit_positions_default():
    insn = GemmInsn(reset=True, uop_bgn=0x1ABC, uop_end=0x2000, iter_out=0x3FFF, iter_in=0x2AAA,
                    dst_factor_out=0x7FF, dst_factor_in=0x555, src_factor_out=0x2AA, src_factor_in=0x123,
                    wgt_factor_out=0x3FF, wgt_factor_in=0x201, deps=Deps(pop_prev=True))
    word = (2 | 1 << 3 | 1 << 7 | 0x1ABC << 8 | 0x2000 << 21 | 0x3FFF << 35 | 0x2AAA << 49
            | 0x7FF << 64 | 0x555 << 75 | 0x2AA << 86 | 0x123 << 97 | 0x3FF << 108 | 0x201 << 118)
    assert encode(insn, DEFAULT) == word.to_bytes(16, "little")
    assert (word >> 63) & 1 == 0  # the gap bit
    assert decode(word.to_bytes(16, "little"), DEFAULT) == insn
    # uop_end may be 8192 (exclusive end of a full UOP buffer) on the default config
    assert decode(encode(replace(insn, uop_end=8192), DEFAULT), DEFAULT).uop_end == 8192


def test_alu_bit_positions_default():
    insn = AluInsn(alu_opcode=3, uop_bgn=5, uop_end=9, iter_out=2, iter_in=3, dst_factor_out=4,
                   dst_factor_in=1, src_factor_out=6, src_factor_in=7, use_imm=True, imm=-2,
                   deps=Deps(push_next=True))
    word = (4 | 1 << 6 | 5 << 8 | 9 << 21 | 2 << 35 | 3 << 49 | 4 << 64 | 1 << 75 | 6 << 86
            | 7 << 97 | 3 << 108 | 1 << 111 | 0xFFFE << 112)
    assert encode(insn, DEFAULT) == word.to_bytes(16, "little")
    back = decode(word.to_bytes(16, "little"), DEFAULT)
    assert back == insn and back.imm == -2


@pytest.mark.parametrize("imm", [-32768, -32767, -300, -1, 0, 1, 255, 32767])
def test_alu_imm_is_signed_16_bit(imm):
    insn = AluInsn(2, 0, 1, 1, 1, use_imm=True, imm=imm)
    raw = encode(insn, DEFAULT)
    assert int.from_bytes(raw, "little") >> 112 == imm & 0xFFFF
    assert decode(raw, DEFAULT).imm == imm
    raw_v = encode(insn, VARIANT)
    assert (int.from_bytes(raw_v, "little") >> 100) & 0xFFFF == imm & 0xFFFF
    assert decode(raw_v, VARIANT).imm == imm


def test_finish_and_dep_flag_bits():
    assert encode(FinishInsn(), DEFAULT) == (3).to_bytes(16, "little")
    for bit, name in zip((3, 4, 5, 6), ("pop_prev", "pop_next", "push_prev", "push_next")):
        deps = Deps(**{name: True})
        assert encode(FinishInsn(deps), DEFAULT) == (3 | 1 << bit).to_bytes(16, "little")
        assert encode(GemmInsn(False, 0, 1, 1, 1, deps=deps), DEFAULT) == (
            2 | 1 << bit | 1 << 21 | 1 << 35 | 1 << 49).to_bytes(16, "little")
        assert encode(MemInsn(OP_LOAD, 0, 0, 0, 0, 0, 0, deps=deps), DEFAULT) == (
            1 << bit).to_bytes(16, "little")
        assert encode(AluInsn(0, 0, 1, 1, 1, deps=deps), DEFAULT) == (
            4 | 1 << bit | 1 << 21 | 1 << 35 | 1 << 49).to_bytes(16, "little")
        assert decode(encode(FinishInsn(deps), DEFAULT), DEFAULT) == FinishInsn(deps)


def test_micro_op_bit_positions_default():
    words = encode_uops(np.array([0x7FF, 1, 0]), np.array([0x555, 0, 1]), np.array([0x3FF, 2, 0]),
                        DEFAULT)
    assert words.dtype == np.dtype("<u4")
    assert [int(w) for w in words] == [0x7FF | 0x555 << 11 | 0x3FF << 22, 1 | 2 << 22, 1 << 11]
    assert words.tobytes() == b"".join(
        int(w).to_bytes(4, "little") for w in (0x7FF | 0x555 << 11 | 0x3FF << 22, 1 | 2 << 22, 1 << 11))


def test_variant_bit_positions_by_hand():
    g = GemmInsn(False, uop_bgn=0x7FF, uop_end=0x800, iter_out=1, iter_in=2, dst_factor_out=0xFF,
                 dst_factor_in=0x81, src_factor_out=0x1FF, src_factor_in=0x100, wgt_factor_out=0xAA,
                 wgt_factor_in=0x55)
    word = (2 | 0x7FF << 8 | 0x800 << 19 | 1 << 31 | 2 << 45 | 0xFF << 64 | 0x81 << 72 | 0x1FF << 80
            | 0x100 << 89 | 0xAA << 98 | 0x55 << 106)
    assert encode(g, VARIANT) == word.to_bytes(16, "little")
    assert [int(w) for w in encode_uops(np.array([0xFF]), np.array([0x1FF]), np.array([0xFF]), VARIANT)] == [
        0xFF | 0x1FF << 8 | 0xFF << 17]


def test_micro_op_src_is_as_wide_as_the_deeper_of_acc_and_inp():
    # ACC depth 2^11 > INP depth 2^9: ALU micro-ops put ACC indices in src, so src gets 11 bits.
    cfg = VtaConfig(LOG_ACC_BUFF_SIZE=17, LOG_INP_BUFF_SIZE=13, LOG_WGT_BUFF_SIZE=16)
    validate_config(cfg)
    words = encode_uops(np.array([0x7FF, 0]), np.array([0x5BC, 0x7FF]), np.array([0xFF, 1]), cfg)
    assert [int(w) for w in words] == [0x7FF | 0x5BC << 11 | 0xFF << 22, 0x7FF << 11 | 1 << 22]
    d, s, w = decode_uops(words, cfg)
    assert s.tolist() == [0x5BC, 0x7FF] and d.tolist() == [0x7FF, 0] and w.tolist() == [0xFF, 1]


def test_alu_sources_as_wide_as_acc_make_deep_acc_configs_too_wide():
    # ACC depth 2^12: four 12-bit factors, opcode, use_imm and a 16-bit imm need 68 bits of word 1.
    with pytest.raises(IsaError, match="ALU instruction needs 144 bits"):
        validate_config(VtaConfig(LOG_ACC_BUFF_SIZE=18, LOG_INP_BUFF_SIZE=14, LOG_WGT_BUFF_SIZE=16))


# ---------------------------------------------------------------- random round trips

@pytest.mark.parametrize("which", ["default", "variant"])
def test_random_round_trips(which):
    cfg, gemm_t, alu_t, _ = TABLES[which]
    rng = np.random.default_rng(20240601 + len(which))
    program, expected = [], []
    for _ in range(300):
        deps = random_deps(rng)
        opcode = int(rng.choice([OP_LOAD, OP_STORE]))
        v = random_fields(rng, MEM)
        insn = MemInsn(opcode=opcode, deps=Deps(**deps), **v)
        raw = pack(opcode, {**HEADER, **MEM}, {**deps, **v})
        assert encode(insn, cfg) == raw
        assert decode(raw, cfg) == insn
        program.append(insn)
        expected.append(raw)

        v = random_fields(rng, gemm_t)
        insn = GemmInsn(deps=Deps(**deps), **{**v, "reset": bool(v["reset"])})
        raw = pack(OP_GEMM, {**HEADER, **gemm_t}, {**deps, **v})
        assert encode(insn, cfg) == raw
        assert decode(raw, cfg) == insn
        program.append(insn)
        expected.append(raw)

        v = random_fields(rng, alu_t, skip=("imm",))
        imm = int(rng.integers(-(1 << 15), 1 << 15))
        insn = AluInsn(deps=Deps(**deps), imm=imm,
                       **{**v, "reset": bool(v["reset"]), "use_imm": bool(v["use_imm"])})
        raw = pack(OP_ALU, {**HEADER, **alu_t}, {**deps, **v, "imm": imm})
        assert encode(insn, cfg) == raw
        back = decode(raw, cfg)
        assert back == insn and back.imm == imm
        program.append(insn)
        expected.append(raw)

        insn = FinishInsn(Deps(**deps))
        raw = pack(OP_FINISH, HEADER, deps)
        assert encode(insn, cfg) == raw
        assert decode(raw, cfg) == insn
        program.append(insn)
        expected.append(raw)

    blob = encode_program(program, cfg)
    assert blob == b"".join(expected)
    assert decode_program(blob, cfg) == program


@pytest.mark.parametrize("which", ["default", "variant"])
def test_micro_op_round_trip(which):
    cfg, _, _, uop_t = TABLES[which]
    rng = np.random.default_rng(7)
    n = 1000
    cols = {k: rng.integers(0, 1 << w, size=n) for k, (_, w) in uop_t.items()}
    words = encode_uops(cols["dst"], cols["src"], cols["wgt"], cfg)
    want = [sum(int(cols[k][j]) << lsb for k, (lsb, _) in uop_t.items()) for j in range(n)]
    assert [int(w) for w in words] == want
    d, s, w = decode_uops(words, cfg)
    assert np.array_equal(d, cols["dst"]) and np.array_equal(s, cols["src"]) and np.array_equal(w, cols["wgt"])


# ---------------------------------------------------------------- values that do not fit

@pytest.mark.parametrize("which", ["default", "variant"])
def test_every_field_too_wide_or_negative_raises(which):
    cfg, gemm_t, alu_t, uop_t = TABLES[which]
    base_mem = MemInsn(OP_LOAD, 0, 0, 0, 0, 0, 0)
    base_gemm = GemmInsn(False, 0, 1, 1, 1)
    base_alu = AluInsn(0, 0, 1, 1, 1)
    cases = [(base_mem, MEM), (base_gemm, gemm_t), (base_alu, alu_t)]
    for base, table in cases:
        for name, (_, width) in table.items():
            if name in ("reset", "use_imm", "imm"):
                continue
            top = replace(base, **{name: (1 << width) - 1})
            assert encode(top, cfg)  # the largest value fits
            with pytest.raises(ValueError, match=name):
                encode(replace(base, **{name: 1 << width}), cfg)
            with pytest.raises(ValueError, match=name):
                encode(replace(base, **{name: -1}), cfg)
    for k, (_, width) in uop_t.items():
        arrays = {"dst": np.zeros(2, np.int64), "src": np.zeros(2, np.int64), "wgt": np.zeros(2, np.int64)}
        arrays[k][1] = (1 << width) - 1
        encode_uops(arrays["dst"], arrays["src"], arrays["wgt"], cfg)
        arrays[k][1] = 1 << width
        with pytest.raises(ValueError, match=k):
            encode_uops(arrays["dst"], arrays["src"], arrays["wgt"], cfg)
        arrays[k][1] = -1
        with pytest.raises(ValueError, match=k):
            encode_uops(arrays["dst"], arrays["src"], arrays["wgt"], cfg)


def test_variant_field_widths_differ_from_default():
    g = GemmInsn(False, 0, 1, 1, 1, dst_factor_out=256, src_factor_in=511)
    encode(g, DEFAULT)
    with pytest.raises(ValueError, match="dst_factor_out"):
        encode(g, VARIANT)
    encode(replace(g, dst_factor_out=255), VARIANT)
    with pytest.raises(ValueError, match="uop_bgn"):
        encode(GemmInsn(False, 2048, 2049, 1, 1), VARIANT)


@pytest.mark.parametrize("imm", [32768, 65536, -32769])
def test_alu_imm_outside_int16_raises(imm):
    # The field is a signed 16-bit immediate: anything outside [-32768, 32767]
    # would silently encode another value (e.g. 65536 -> 0, 40000 -> -25536).
    with pytest.raises(ValueError, match="imm"):
        encode(AluInsn(2, 0, 1, 1, 1, use_imm=True, imm=imm), DEFAULT)


def test_decode_rejects_unknown_opcodes_and_ragged_programs():
    for op in (5, 6, 7):
        with pytest.raises(ValueError, match="opcode"):
            decode(op.to_bytes(16, "little"), DEFAULT)
    with pytest.raises(ValueError, match="16-byte"):
        decode_program(bytes(24), DEFAULT)
    assert decode_program(b"", DEFAULT) == []


# ---------------------------------------------------------------- configs that cannot be encoded

def test_default_config_fills_word_one_exactly():
    validate_config(DEFAULT)
    validate_config(VARIANT)
    g = GemmInsn(False, 0, 1, 1, 1, wgt_factor_in=0x3FF)
    assert int.from_bytes(encode(g, DEFAULT), "little") >> 118 == 0x3FF


@pytest.mark.parametrize("overrides,message", [
    # uop depth 2^14: word 0 overflows into word 1, GEMM then needs a third word
    ({"LOG_UOP_BUFF_SIZE": 16}, r"GEMM instruction needs 148 bits, more than VTA's 128"),
    # acc 12 + src 12 + wgt 8 = 32-bit micro-op (fits), GEMM word 1 = 62 bits (fits),
    # but ALU word 1 = dst 12+12, src 11+11, opcode 3, use_imm 1 = 50 bits, and the 16-bit imm
    # would straddle bit 128, so it moves to a third word: 144 bits
    ({"LOG_ACC_BUFF_SIZE": 18, "LOG_WGT_BUFF_SIZE": 16}, r"ALU instruction needs 144 bits"),
    ({"LOG_ACC_BUFF_SIZE": 18}, r"micro-op needs 34 bits .* more than the 32"),
    ({"LOG_WGT_BUFF_SIZE": 19}, r"micro-op needs 33 bits"),
])
def test_oversized_configs_raise_isa_error(overrides, message):
    with pytest.raises(IsaError, match=message):
        validate_config(VtaConfig(**overrides))
