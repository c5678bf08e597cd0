"""VTA's part of the program bundle (docs/bundle-format.md): its manifest fields, the
program.bin it writes, and the checks of a program.bin read back before anything runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedcsp.errors import BadInput
from embedcsp.targets.vta.codegen import dram_image, layout_arrays
from embedcsp.targets.vta.config import (
    CONFIG_KEYS,
    MEM_ACC,
    MEM_ACC_8BIT,
    MEM_INP,
    MEM_OUT,
    MEM_UOP,
    MEM_WGT,
    VtaConfig,
    validate_config,
)
from embedcsp.targets.vta.decode import (
    decode_program,  # the model's own reading, not the encoder's
)
from embedcsp.targets.vta.encoding import OP_LOAD, FinishInsn, MemInsn, encode_program

MAX_LOG_VALUE = 24  # no vta_config number beyond this: a 16 MiB scratchpad, 2^24-lane blocks
_MEM_NAMES = {MEM_UOP: "UOP", MEM_WGT: "WGT", MEM_INP: "INP", MEM_ACC: "ACC", MEM_OUT: "OUT",
              MEM_ACC_8BIT: "ACC_8BIT"}


def manifest_fields(compiled) -> dict:
    """The manifest keys only a VTA bundle has."""
    program, plan = compiled.program, compiled.plan
    tiling = plan.tiling
    return {
        "isa": "vta",
        "vta_config": compiled.accelerator.config.as_dict(),
        "insn_count": len(program.insns),
        "plan": {"rows": plan.n_rows, "cols": plan.n_cols, "reds": plan.n_reds,
                 "tile": {"rows": tiling.rows, "cols": tiling.cols, "reds": tiling.reds},
                 "outer": tiling.outer, "slots": {"inp": tiling.inp_slots, "wgt": tiling.wgt_slots,
                                                  "acc": tiling.acc_slots}},
        "regions": {name: {"offset": r.offset, "size": r.size} for name, r in program.regions.items()},
    }


def files(compiled, inputs: dict[str, np.ndarray]) -> tuple[bytes, np.ndarray, dict[str, np.ndarray]]:
    """(program.bin, dram.bin, layout.npz arrays) of a compiled program on `inputs`."""
    program = compiled.program
    image = dram_image(program, inputs)
    assert len(image) == program.dram_size
    shapes = {t.name: t.shape for t in compiled.operator.tensors}
    return encode_program(list(program.insns), program.config), image, layout_arrays(program, shapes)


def read_config(m) -> VtaConfig:
    """The manifest's vta_config, every number checked (`m` is bundle.py's typed reader)."""
    raw = m.obj(m.doc, "vta_config", "vta_config")
    unknown = sorted(set(raw) - set(CONFIG_KEYS))
    if unknown:
        raise m.bad(f"vta_config has unknown key(s) {', '.join(map(repr, unknown))}")
    cfg = VtaConfig(**{k: m.int_(raw, k, f"vta_config.{k}", 0, MAX_LOG_VALUE) for k in CONFIG_KEYS})
    try:
        validate_config(cfg)
    except BadInput as exc:
        raise m.bad(str(exc)) from None
    return cfg


def read_program(m, file: Path, cfg: VtaConfig, dram_bytes: int) -> list:
    """program.bin decoded by the model's reader; every LOAD and STORE inside dram.bin."""
    count = m.int_(m.doc, "insn_count", "insn_count", 1)
    size = file.stat().st_size
    if size % 16:
        raise BadInput(f"{file} is {size} bytes, not a whole number of 16-byte instructions")
    if size // 16 != count:
        raise BadInput(f"{file} holds {size // 16} instructions, but the manifest's insn_count is {count}")
    try:
        insns = decode_program(file.read_bytes(), cfg)
    except OSError as exc:
        raise BadInput(f"{file}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise BadInput(f"{file}: {exc}") from None
    if not isinstance(insns[-1], FinishInsn):
        raise BadInput(f"{file} does not end with FINISH")
    for pc, insn in enumerate(insns):
        if isinstance(insn, MemInsn):
            _check_dram_range(file, pc, insn, cfg, dram_bytes)
    return insns


def _check_dram_range(file: Path, pc: int, insn: MemInsn, cfg: VtaConfig, dram_bytes: int) -> None:
    """Every byte a LOAD or STORE moves lies inside dram.bin (docs/vta.md section 4)."""
    op = "LOAD" if insn.opcode == OP_LOAD else "STORE"
    if insn.memory_type not in _MEM_NAMES:
        raise BadInput(f"{file}: instruction {pc} ({op}) has unknown memory type {insn.memory_type}")
    if insn.x_size == 0 or insn.y_size == 0:
        return  # moves nothing (x_size 0 is a token-only NOP)
    elem = cfg.elem_bytes(insn.memory_type)
    lo = insn.dram_base * elem
    # Rows start at (dram_base + y * x_stride) * elem, y < y_size, each x_size * elem bytes long.
    hi = (insn.dram_base + (insn.y_size - 1) * insn.x_stride + insn.x_size) * elem
    if hi > dram_bytes:
        raise BadInput(f"{file}: instruction {pc} ({op} {_MEM_NAMES[insn.memory_type]}) moves dram.bin "
                       f"bytes in [{lo}, {hi}), past its end at {dram_bytes} bytes")


def run_image(bundle, dram: np.ndarray, out_dram: np.ndarray):
    """(outputs as laid out by out_dram, counters): a read bundle run on a filled DRAM image."""
    from embedcsp.targets.vta.config import vta_accelerator
    from embedcsp.targets.vta.execute import execute_image

    pattern = vta_accelerator(bundle.config).pattern
    return execute_image(bundle.program, dram, bundle.config, pattern, out_dram)
