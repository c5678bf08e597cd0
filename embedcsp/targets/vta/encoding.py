"""VTA instructions and micro-ops at bit level (docs/vta.md section 2).

Instructions are C bitfields on two uint64 words: a field never straddles bit
64, so the layout is "place fields in order, skip to the next word when one
does not fit". Widths that depend on buffer depths come from the config, so
the same code encodes every variant.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np

from embedcsp.errors import IsaError
from embedcsp.targets.vta.config import (
    ALUOP_IMM_BITS,
    INSN_BITS,
    LOOP_ITER_BITS,
    MEMOP_DRAM_ADDR_BITS,
    MEMOP_PAD_BITS,
    MEMOP_SIZE_BITS,
    MEMOP_SRAM_ADDR_BITS,
    MEMOP_STRIDE_BITS,
    VtaConfig,
)

OP_LOAD, OP_STORE, OP_GEMM, OP_FINISH, OP_ALU = range(5)
ALU_MIN, ALU_MAX, ALU_ADD, ALU_SHR, ALU_MUL = range(5)
ALU_NAMES = {ALU_MIN: "min", ALU_MAX: "max", ALU_ADD: "add", ALU_SHR: "shr", ALU_MUL: "mul"}


@dataclass(frozen=True)
class Deps:
    """Dependency-token flags of the common header."""

    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False


@dataclass(frozen=True)
class MemInsn:
    opcode: int  # OP_LOAD or OP_STORE
    memory_type: int
    sram_base: int
    dram_base: int
    y_size: int
    x_size: int
    x_stride: int
    y_pad_0: int = 0
    y_pad_1: int = 0
    x_pad_0: int = 0
    x_pad_1: int = 0
    deps: Deps = Deps()


@dataclass(frozen=True)
class GemmInsn:
    reset: bool
    uop_bgn: int
    uop_end: int
    iter_out: int
    iter_in: int
    dst_factor_out: int = 0
    dst_factor_in: int = 0
    src_factor_out: int = 0
    src_factor_in: int = 0
    wgt_factor_out: int = 0
    wgt_factor_in: int = 0
    deps: Deps = Deps()
    opcode = OP_GEMM


@dataclass(frozen=True)
class AluInsn:
    alu_opcode: int
    uop_bgn: int
    uop_end: int
    iter_out: int
    iter_in: int
    dst_factor_out: int = 0
    dst_factor_in: int = 0
    src_factor_out: int = 0
    src_factor_in: int = 0
    use_imm: bool = False
    imm: int = 0
    reset: bool = False
    deps: Deps = Deps()
    opcode = OP_ALU


@dataclass(frozen=True)
class FinishInsn:
    deps: Deps = Deps()
    opcode = OP_FINISH


Insn = MemInsn | GemmInsn | AluInsn | FinishInsn

_HEADER = (("opcode", 3), ("pop_prev", 1), ("pop_next", 1), ("push_prev", 1), ("push_next", 1))


@dataclass(frozen=True)
class Layouts:
    """Bit offsets and widths of every field, per instruction kind."""

    mem: tuple[tuple[str, int, int], ...]
    gemm: tuple[tuple[str, int, int], ...]
    alu: tuple[tuple[str, int, int], ...]
    uop: tuple[tuple[str, int, int], ...]


def _place(kind: str, spec: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int, int], ...]:
    placed, pos = [], 0
    for name, width in spec:
        if pos // 64 != (pos + width - 1) // 64:
            pos = (pos // 64 + 1) * 64  # C bitfields on uint64 never straddle a word
        placed.append((name, pos, width))
        pos += width
    if pos > INSN_BITS:
        raise IsaError(
            f"vta_config: the {kind} instruction needs {pos} bits, more than VTA's {INSN_BITS}; "
            "use smaller buffers"
        )
    return tuple(placed)


@lru_cache(maxsize=None)
def layouts(cfg: VtaConfig) -> Layouts:
    loop = (("reset", 1), ("uop_bgn", cfg.log_uop_depth), ("uop_end", cfg.log_uop_depth + 1),
            ("iter_out", LOOP_ITER_BITS), ("iter_in", LOOP_ITER_BITS),
            ("dst_factor_out", cfg.log_acc_depth), ("dst_factor_in", cfg.log_acc_depth))

    def src(log_depth: int) -> tuple[tuple[str, int], ...]:
        return (("src_factor_out", log_depth), ("src_factor_in", log_depth))

    # GEMM's source is the INP buffer, the ALU's the accumulator (docs/vta.md, ALU layout).
    mem = _HEADER + (("memory_type", 3), ("sram_base", MEMOP_SRAM_ADDR_BITS),
                     ("dram_base", MEMOP_DRAM_ADDR_BITS), ("y_size", MEMOP_SIZE_BITS),
                     ("x_size", MEMOP_SIZE_BITS), ("x_stride", MEMOP_STRIDE_BITS),
                     ("y_pad_0", MEMOP_PAD_BITS), ("y_pad_1", MEMOP_PAD_BITS),
                     ("x_pad_0", MEMOP_PAD_BITS), ("x_pad_1", MEMOP_PAD_BITS))
    gemm = _HEADER + loop + src(cfg.log_inp_depth) + (("wgt_factor_out", cfg.log_wgt_depth),
                                                      ("wgt_factor_in", cfg.log_wgt_depth))
    alu = _HEADER + loop + src(cfg.log_acc_depth) + (("alu_opcode", 3), ("use_imm", 1),
                                                     ("imm", ALUOP_IMM_BITS))
    src_bits = cfg.uop_src_bits
    uop = (("dst_idx", 0, cfg.log_acc_depth), ("src_idx", cfg.log_acc_depth, src_bits),
           ("wgt_idx", cfg.log_acc_depth + src_bits, cfg.log_wgt_depth))
    return Layouts(_place("LOAD/STORE", mem), _place("GEMM", gemm), _place("ALU", alu), uop)


_DEP_FIELDS = ("pop_prev", "pop_next", "push_prev", "push_next")
_Plan = tuple[tuple[str, bool, int, int], ...]  # (field, a dependency flag?, bit position, width)


def _plan(kind: type, opcode: int, cfg: VtaConfig) -> _Plan:
    """(field, whether it is a dependency flag, bit position, width) for every field of the
    instruction word of `kind`; fields the kind lacks (FINISH in GEMM's layout) encode 0."""
    lay = layouts(cfg)
    layout = {OP_LOAD: lay.mem, OP_STORE: lay.mem, OP_GEMM: lay.gemm, OP_FINISH: lay.gemm,
              OP_ALU: lay.alu}[opcode]
    own = {f.name for f in fields(kind)} | {"opcode"}
    return tuple((name, name in _DEP_FIELDS, pos, width) for name, pos, width in layout
                 if name in own or name in _DEP_FIELDS)


def encode(insn: Insn, cfg: VtaConfig, plan: _Plan | None = None) -> bytes:
    """One instruction as 16 little-endian bytes (`plan`: its kind's `_plan`, when the caller has it)."""
    word = 0
    deps = insn.deps
    for name, dep, pos, width in plan or _plan(type(insn), insn.opcode, cfg):
        value = int(getattr(deps if dep else insn, name))
        if name == "imm":
            if not -(1 << (width - 1)) <= value < (1 << (width - 1)):
                raise ValueError(f"AluInsn.imm={value} does not fit a signed {width}-bit immediate")
            value &= (1 << width) - 1  # two's complement
        if not 0 <= value < (1 << width):
            raise ValueError(f"{type(insn).__name__}.{name}={value} does not fit {width} bits")
        word |= value << pos
    return word.to_bytes(16, "little")


def encode_program(insns: list[Insn], cfg: VtaConfig) -> bytes:
    """The program as VTA loads it; each instruction kind's field plan is made once."""
    plans: dict[tuple[type, int], _Plan] = {}
    out = []
    for insn in insns:
        key = (type(insn), insn.opcode)
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = _plan(*key, cfg)
        out.append(encode(insn, cfg, plan))
    return b"".join(out)


def _get(word: int, pos: int, width: int) -> int:
    return (word >> pos) & ((1 << width) - 1)


def decode(raw: bytes, cfg: VtaConfig) -> Insn:
    """16 bytes back to an instruction; unknown opcodes raise ValueError."""
    word = int.from_bytes(raw, "little")
    lay = layouts(cfg)
    opcode = _get(word, 0, 3)
    if opcode in (OP_LOAD, OP_STORE):
        layout = lay.mem
    elif opcode in (OP_GEMM, OP_FINISH):
        layout = lay.gemm
    elif opcode == OP_ALU:
        layout = lay.alu
    else:
        raise ValueError(f"unknown opcode {opcode}")
    v = {name: _get(word, pos, width) for name, pos, width in layout}
    deps = Deps(bool(v.pop("pop_prev")), bool(v.pop("pop_next")),
                bool(v.pop("push_prev")), bool(v.pop("push_next")))
    v.pop("opcode")
    if opcode == OP_FINISH:
        return FinishInsn(deps)
    if opcode in (OP_LOAD, OP_STORE):
        return MemInsn(opcode=opcode, deps=deps, **v)
    if opcode == OP_GEMM:
        return GemmInsn(deps=deps, **{**v, "reset": bool(v["reset"])})
    imm = v["imm"] - (1 << ALUOP_IMM_BITS) if v["imm"] >> (ALUOP_IMM_BITS - 1) else v["imm"]
    return AluInsn(deps=deps, **{**v, "imm": imm, "use_imm": bool(v["use_imm"]), "reset": bool(v["reset"])})


def decode_program(raw: bytes, cfg: VtaConfig) -> list[Insn]:
    if len(raw) % 16:
        raise ValueError(f"program is {len(raw)} bytes, not a whole number of 16-byte instructions")
    return [decode(raw[i:i + 16], cfg) for i in range(0, len(raw), 16)]


def encode_uops(dst: np.ndarray, src: np.ndarray, wgt: np.ndarray, cfg: VtaConfig) -> np.ndarray:
    """Micro-ops as little-endian uint32 words."""
    (_, p0, w0), (_, p1, w1), (_, p2, w2) = layouts(cfg).uop
    for name, arr, width in (("dst", dst, w0), ("src", src, w1), ("wgt", wgt, w2)):
        arr = np.asarray(arr)
        if arr.size and (arr.min() < 0 or arr.max() >= (1 << width)):
            raise ValueError(f"micro-op {name} index does not fit {width} bits")
    words = (np.asarray(dst, np.uint64) << p0) | (np.asarray(src, np.uint64) << p1) | (
        np.asarray(wgt, np.uint64) << p2)
    return words.astype("<u4")


def decode_uops(words: np.ndarray, cfg: VtaConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = np.asarray(words, np.int64)
    out = tuple((w >> pos) & ((1 << width) - 1) for _, pos, width in layouts(cfg).uop)
    return out  # type: ignore[return-value]
