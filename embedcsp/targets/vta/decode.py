"""The functional model's own reading of VTA binaries (docs/vta.md, "Instruction layouts").

This module restates the instruction structs of VTA's hw_spec.h field by field
and shares no table with `embedcsp.targets.vta.encoding`, which writes the binaries: if one
of the two misreads the spec, programs stop verifying instead of agreeing with
themselves. It produces the same instruction records as the encoder (they are
plain data), so the model and the compiler can be compared record by record.

C bitfields on uint64: fields are allocated in declaration order from bit 0;
a field that would cross into the next 64-bit unit starts at that unit instead.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from embedcsp.targets.vta.config import VtaConfig
from embedcsp.targets.vta.encoding import (
    AluInsn,
    Deps,
    FinishInsn,
    GemmInsn,
    Insn,
    MemInsn,
)

INSN_BYTES = 16
OPCODES = {0: "LOAD", 1: "STORE", 2: "GEMM", 3: "FINISH", 4: "ALU"}


def _struct(*decls: tuple[str, int]) -> dict[str, tuple[int, int]]:
    """Field name -> (first bit, width), laid out as a C compiler lays out uint64 bitfields."""
    out, bit = {}, 0
    for name, width in decls:
        unit_end = (bit // 64 + 1) * 64
        if bit + width > unit_end:
            bit = unit_end
        out[name] = (bit, width)
        bit += width
    if bit > 8 * INSN_BYTES:
        raise ValueError(f"the struct needs {bit} bits, an instruction has {8 * INSN_BYTES}")
    return out


@lru_cache(maxsize=None)
def structs(cfg: VtaConfig) -> dict[str, dict[str, tuple[int, int]]]:
    """VTAMemInsn, VTAGemInsn, VTAAluInsn and VTAUop for one configuration."""
    uop_d, inp_d, wgt_d, acc_d = (cfg.log_uop_depth, cfg.log_inp_depth, cfg.log_wgt_depth,
                                  cfg.log_acc_depth)
    header = (("opcode", 3), ("pop_prev", 1), ("pop_next", 1), ("push_prev", 1), ("push_next", 1))
    mem = _struct(*header, ("memory_type", 3), ("sram_base", 16), ("dram_base", 32),
                  ("y_size", 16), ("x_size", 16), ("x_stride", 16),
                  ("y_pad_0", 4), ("y_pad_1", 4), ("x_pad_0", 4), ("x_pad_1", 4))
    loops = (("reset", 1), ("uop_bgn", uop_d), ("uop_end", uop_d + 1), ("iter_out", 14),
             ("iter_in", 14), ("dst_factor_out", acc_d), ("dst_factor_in", acc_d))
    gemm = _struct(*header, *loops, ("src_factor_out", inp_d), ("src_factor_in", inp_d),
                   ("wgt_factor_out", wgt_d), ("wgt_factor_in", wgt_d))
    # hw_spec.h declares the ALU's source factors with the accumulator depth.
    alu = _struct(*header, *loops, ("src_factor_out", acc_d), ("src_factor_in", acc_d),
                  ("alu_opcode", 3), ("use_imm", 1), ("imm", 16))
    src_w = max(acc_d, inp_d)
    uop = {"dst_idx": (0, acc_d), "src_idx": (acc_d, src_w), "wgt_idx": (acc_d + src_w, wgt_d)}
    return {"mem": mem, "gemm": gemm, "alu": alu, "uop": uop}


def _read(word: int, where: tuple[int, int]) -> int:
    first, width = where
    return (word >> first) & ((1 << width) - 1)


def decode_insn(raw: bytes, cfg: VtaConfig) -> Insn:
    """One 16-byte little-endian instruction; ValueError for an opcode VTA does not have."""
    word = int.from_bytes(raw, "little")
    opcode = word & 0b111
    if opcode not in OPCODES:
        raise ValueError(f"opcode {opcode} is not a VTA instruction")
    kind = {0: "mem", 1: "mem", 2: "gemm", 3: "gemm", 4: "alu"}[opcode]
    f = {name: _read(word, where) for name, where in structs(cfg)[kind].items()}
    deps = Deps(bool(f.pop("pop_prev")), bool(f.pop("pop_next")),
                bool(f.pop("push_prev")), bool(f.pop("push_next")))
    del f["opcode"]
    if opcode == 3:
        return FinishInsn(deps)
    if kind == "mem":
        return MemInsn(opcode=opcode, deps=deps, **f)
    reset = bool(f.pop("reset"))
    if kind == "gemm":
        return GemmInsn(reset=reset, deps=deps, **f)
    imm = f.pop("imm")
    if imm >= 1 << 15:  # a signed 16-bit immediate
        imm -= 1 << 16
    return AluInsn(reset=reset, deps=deps, imm=imm, use_imm=bool(f.pop("use_imm")), **f)


def decode_program(raw: bytes, cfg: VtaConfig) -> list[Insn]:
    """A whole program.bin; ValueError if it is not a whole number of instructions."""
    if len(raw) % INSN_BYTES:
        raise ValueError(f"{len(raw)} bytes is not a whole number of {INSN_BYTES}-byte instructions")
    return [decode_insn(raw[k:k + INSN_BYTES], cfg) for k in range(0, len(raw), INSN_BYTES)]


# Every field any instruction has, in one order: the columns of `decode_table`.
COLUMNS = ("opcode", "pop_prev", "pop_next", "push_prev", "push_next",
           "memory_type", "sram_base", "dram_base", "y_size", "x_size", "x_stride",
           "y_pad_0", "y_pad_1", "x_pad_0", "x_pad_1",
           "reset", "uop_bgn", "uop_end", "iter_out", "iter_in", "dst_factor_out", "dst_factor_in",
           "src_factor_out", "src_factor_in", "wgt_factor_out", "wgt_factor_in",
           "alu_opcode", "use_imm", "imm")
_KIND_OPCODES = {"mem": (0, 1), "gemm": (2, 3), "alu": (4,)}


def decode_table(raw: bytes, cfg: VtaConfig) -> dict[str, np.ndarray]:
    """A whole program.bin read at once: one int64 column per field of `COLUMNS`, zero where
    an instruction's kind has no such field; the same values `decode_insn` gives one by one
    (tests/test_sim_decode.py compares them), for programs of a hundred thousand instructions.
    ValueError for a ragged program or an opcode VTA does not have."""
    if len(raw) % INSN_BYTES:
        raise ValueError(f"{len(raw)} bytes is not a whole number of {INSN_BYTES}-byte instructions")
    words = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
    opcode = (words[:, 0] & np.uint64(0b111)).astype(np.int64)
    bad = np.flatnonzero(~np.isin(opcode, list(OPCODES)))
    if bad.size:
        raise ValueError(f"opcode {int(opcode[bad[0]])} is not a VTA instruction "
                         f"(instruction {int(bad[0])})")
    table = {name: np.zeros(len(words), np.int64) for name in COLUMNS}
    for kind, fields in structs(cfg).items():
        if kind == "uop":
            continue
        rows = np.isin(opcode, _KIND_OPCODES[kind])
        if not rows.any():
            continue
        for name, (first, width) in fields.items():
            # Fields never straddle the two 64-bit words, so each is read from one of them.
            word = words[rows, first // 64]
            table[name][rows] = ((word >> np.uint64(first % 64)) & np.uint64((1 << width) - 1)).astype(np.int64)
    table["imm"] = np.where(table["imm"] >= 1 << 15, table["imm"] - (1 << 16), table["imm"])
    return table


def decode_uops(words: np.ndarray, cfg: VtaConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint32 micro-op words -> (dst, src, wgt) index arrays."""
    w = np.asarray(words, np.int64)
    fields = structs(cfg)["uop"]
    return tuple((w >> first) & ((1 << width) - 1)  # type: ignore[return-value]
                 for first, width in (fields["dst_idx"], fields["src_idx"], fields["wgt_idx"]))
