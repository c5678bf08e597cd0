"""The functional model's own decoder (embedcsp/targets/vta/decode.py) against hand-worked words.

Expected bit positions are worked out by hand from docs/vta.md's tables, not
from either implementation, and a program whose encoder misreads the spec must
fail verification: the model reads the binary, not the compiler's records.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import embedcsp.targets.vta.encoding as encoding
from embedcsp.accelerator import load_accelerator
from embedcsp.errors import ProgramError
from embedcsp.operator import gemm
from embedcsp.pipeline import Options, solve_and_verify
from embedcsp.reference import Epilogue
from embedcsp.targets.vta.config import VtaConfig, validate_config
from embedcsp.targets.vta.decode import (
    COLUMNS,
    decode_insn,
    decode_program,
    decode_table,
    decode_uops,
)
from embedcsp.targets.vta.encoding import (
    ALU_MAX,
    ALU_SHR,
    AluInsn,
    Deps,
    GemmInsn,
    MemInsn,
    encode,
    encode_uops,
)

ROOT = Path(__file__).resolve().parents[1]
VARIANT = load_accelerator(ROOT / "isa" / "vta_b2_i8_o32.toml")  # INP depth 2^9, ACC depth 2^8


def test_variant_depths_differ():
    cfg = VARIANT.config
    assert (cfg.log_uop_depth, cfg.log_inp_depth, cfg.log_wgt_depth, cfg.log_acc_depth) == (11, 9, 8, 8)


def test_alu_on_variant_decodes_field_by_field():
    # Word 0: opcode [2:0], flags [6:3], reset [7], uop_bgn [18:8] (11 bits), uop_end [30:19] (12),
    # iter_out [44:31], iter_in [58:45]. Word 1 (dst_factor_out, 8 bits, would cross bit 64):
    # dst_factor_out [71:64], dst_factor_in [79:72], src_factor_out [87:80] and src_factor_in
    # [95:88] with the ACC depth (8 bits), alu_opcode [98:96], use_imm [99], imm [115:100].
    w0 = 4 | 1 << 6 | 5 << 8 | 6 << 19 | 3 << 31 | 7 << 45
    w1 = 7 | 1 << 8 | 7 << 16 | 1 << 24 | ALU_SHR << 32 | 1 << 35 | 8 << 36
    raw = (w0 | w1 << 64).to_bytes(16, "little")
    insn = decode_insn(raw, VARIANT.config)
    assert insn == AluInsn(ALU_SHR, uop_bgn=5, uop_end=6, iter_out=3, iter_in=7, dst_factor_out=7,
                           dst_factor_in=1, src_factor_out=7, src_factor_in=1, use_imm=True, imm=8,
                           deps=Deps(push_next=True))
    assert encode(insn, VARIANT.config) == raw


def test_negative_alu_immediate_on_variant():
    # MAX with imm -128: 0xFF80 in bits [115:100].
    w0 = 4 | 0 << 8 | 1 << 19 | 1 << 31 | 1 << 45
    w1 = ALU_MAX << 32 | 1 << 35 | 0xFF80 << 36
    raw = (w0 | w1 << 64).to_bytes(16, "little")
    insn = decode_insn(raw, VARIANT.config)
    assert (insn.alu_opcode, insn.use_imm, insn.imm) == (ALU_MAX, True, -128)
    assert encode(insn, VARIANT.config) == raw


def test_alu_where_acc_is_deeper_than_inp():
    # ACC depth 2^11, INP depth 2^9, UOP depth 2^13: word 1 holds dst (11+11), src (11+11),
    # opcode, use_imm and imm exactly: [74:64] [85:75] [96:86] [107:97] [110:108] [111] [127:112].
    cfg = VtaConfig(LOG_ACC_BUFF_SIZE=17, LOG_INP_BUFF_SIZE=13, LOG_WGT_BUFF_SIZE=16)
    validate_config(cfg)
    assert (cfg.log_acc_depth, cfg.log_inp_depth) == (11, 9)
    w1 = 0x7FF | 0x400 << 11 | 0x3FF << 22 | 0x001 << 33 | ALU_SHR << 44 | 1 << 47 | 0xFFFF << 48
    raw = (4 | w1 << 64).to_bytes(16, "little")
    insn = decode_insn(raw, cfg)
    assert (insn.dst_factor_out, insn.dst_factor_in, insn.src_factor_out, insn.src_factor_in) == (
        0x7FF, 0x400, 0x3FF, 0x001)
    assert (insn.alu_opcode, insn.imm) == (ALU_SHR, -1)
    # A GEMM in the same config keeps INP-wide (9-bit) source factors: src_factor_out at [94:86].
    g = GemmInsn(False, 0, 1, 1, 1, src_factor_out=0x1FF, src_factor_in=0x101, wgt_factor_out=3)
    word = int.from_bytes(encode(g, cfg), "little")
    assert (word >> 86) & 0x1FF == 0x1FF and (word >> 95) & 0x1FF == 0x101 and (word >> 104) & 0xFF == 3
    assert decode_insn(encode(g, cfg), cfg) == g


def test_load_and_micro_ops_decode():
    cfg = VARIANT.config
    m = MemInsn(0, 2, sram_base=0x1234, dram_base=0xDEADBEEF, y_size=3, x_size=5, x_stride=9,
                y_pad_0=1, x_pad_1=15, deps=Deps(pop_next=True))
    word = (0 | 1 << 4 | 2 << 7 | 0x1234 << 10 | 0xDEADBEEF << 26 | 3 << 64 | 5 << 80 | 9 << 96
            | 1 << 112 | 15 << 124)
    assert decode_insn(word.to_bytes(16, "little"), cfg) == m
    # Micro-op: dst [7:0], src [16:8] (max(8, 9) bits), wgt [24:17].
    words = np.array([0xFF | 0x1FF << 8 | 0xAB << 17], dtype="<u4")
    assert [a.tolist() for a in decode_uops(words, cfg)] == [[0xFF], [0x1FF], [0xAB]]
    assert np.array_equal(encode_uops([0xFF], [0x1FF], [0xAB], cfg), words)


def test_decode_refuses_unknown_opcodes_and_ragged_programs():
    with pytest.raises(ValueError, match="opcode 5"):
        decode_insn((5).to_bytes(16, "little"), VARIANT.config)
    with pytest.raises(ValueError, match="whole number"):
        decode_program(b"\0" * 17, VARIANT.config)


def test_the_model_shares_no_field_table_with_the_encoder():
    """The model's reader and the model may use the instruction records, never the encoder's
    layouts or encode functions."""
    allowed = {"AluInsn", "Deps", "FinishInsn", "GemmInsn", "Insn", "MemInsn", "OP_LOAD",
               "ALU_ADD", "ALU_MAX", "ALU_MIN", "ALU_NAMES", "ALU_SHR"}
    model = [ROOT / "embedcsp" / "targets" / "vta" / f for f in ("decode.py", "functional.py")]
    assert all(p.exists() for p in model)
    for path in model:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "embedcsp.targets.vta.encoding":
                names = {a.name for a in node.names}
                assert names <= allowed, f"{path.name} imports {names - allowed} from the encoder"


def _old_alu_layout(cfg):
    """The encoder as it was: ALU source factors as wide as the INP depth (the misread)."""
    lay = _true_layouts(cfg)
    spec = [(n, w) for n, _, w in lay.alu]
    spec = [(n, cfg.log_inp_depth if n.startswith("src_factor") else w) for n, w in spec]
    return replace(lay, alu=encoding._place("ALU", tuple(spec)))


_true_layouts = encoding.layouts


def test_a_misread_encoder_fails_verification(monkeypatch):
    """With the old ALU layout, VTA's fsim read SHR 8 as another opcode; so must our model."""
    options = Options(time_limit=5, epilogue=Epilogue("requant", 8))
    op = gemm(35, 70, 64)
    assert solve_and_verify(op, VARIANT, options).verification.ok
    monkeypatch.setattr(encoding, "layouts", _old_alu_layout)
    try:
        outcome = solve_and_verify(op, VARIANT, options)
    except ProgramError:
        return  # refused outright (an index out of range after the shifted fields)
    assert not outcome.verification.ok


@pytest.mark.parametrize("isa", ["vta_b2_i8_o32.toml", "vta_acc_deep.toml"])
def test_requant_verifies_on_variants_whose_depths_differ(isa):
    acc = load_accelerator(ROOT / "isa" / isa)
    assert acc.config.log_inp_depth != acc.config.log_acc_depth
    outcome = solve_and_verify(gemm(35, 70, 64), acc, Options(time_limit=5, epilogue=Epilogue("requant", 8)))
    assert outcome.verification.ok and outcome.verification.counters.alu_uops > 0
    raw = encoding.encode_program(list(outcome.compiled.program.insns), acc.config)
    alus = [i for i in decode_program(raw, acc.config) if isinstance(i, AluInsn)]
    assert [(i.alu_opcode, i.imm) for i in alus[:3]] == [(ALU_SHR, 8), (encoding.ALU_MIN, 127), (ALU_MAX, -128)]


@pytest.mark.parametrize("isa", ["vta.toml", "vta_b2_i8_o32.toml", "vta_acc_deep.toml"])
def test_the_column_reader_agrees_with_the_instruction_reader(isa):
    """decode_table (one numpy pass over a whole program) gives, instruction by instruction,
    every field decode_insn gives, on random words of every opcode."""
    cfg = load_accelerator(ROOT / "isa" / isa).config
    rng = np.random.default_rng(len(isa))
    words = rng.integers(0, 2**63, size=(600, 2), dtype=np.int64).astype(np.uint64) * np.uint64(2) + \
        rng.integers(0, 2, size=(600, 2)).astype(np.uint64)  # all 64 bits random
    words[:, 0] = (words[:, 0] & ~np.uint64(0b111)) | rng.integers(0, 5, size=600).astype(np.uint64)
    raw = words.astype("<u8").tobytes()
    table = decode_table(raw, cfg)
    seen = set()
    for k in range(len(words)):
        insn = decode_insn(raw[16 * k:16 * k + 16], cfg)
        want = {"opcode": int(words[k, 0] & np.uint64(7))}
        want.update({f: int(getattr(insn.deps, f)) for f in ("pop_prev", "pop_next", "push_prev", "push_next")})
        if not isinstance(insn, encoding.FinishInsn):
            want.update({f: int(v) for f, v in vars(insn).items() if f not in ("deps", "opcode")})
        got = {c: int(table[c][k]) for c in COLUMNS}
        assert {c: got[c] for c in want} == want, (k, insn)
        seen.add(type(insn).__name__)
        if isinstance(insn, MemInsn):  # a kind's absent fields read as zero
            assert got["reset"] == got["iter_out"] == got["imm"] == 0
    assert seen == {"MemInsn", "GemmInsn", "FinishInsn", "AluInsn"}
    assert any(int(v) < 0 for v in table["imm"])  # the signed immediate
    bad = bytearray(raw)
    bad[16 * 7] = (bad[16 * 7] & ~7) | 6
    with pytest.raises(ValueError, match=r"opcode 6 is not a VTA instruction \(instruction 7\)"):
        decode_table(bytes(bad), cfg)
    with pytest.raises(ValueError, match="whole number"):
        decode_table(raw[:-1], cfg)
