"""Print a VTA bundle's ALU instructions as the functional model's own decoder reads them.

    python scripts/alu_words.py BUNDLE_DIR

For each distinct ALU word: its two 64-bit halves in hex and every field, so the
requant epilogue's SHR/MIN/MAX can be checked against docs/vta.md's ALU table by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

from embedcsp.bundle import read_bundle
from embedcsp.targets.vta.decode import decode_insn, structs
from embedcsp.targets.vta.encoding import ALU_NAMES, AluInsn


def main(path: str) -> None:
    bundle = read_bundle(Path(path))
    cfg = bundle.config
    print(f"{path}: depths INP 2^{cfg.log_inp_depth}, ACC 2^{cfg.log_acc_depth}, UOP 2^{cfg.log_uop_depth}")
    print("ALU fields: " + ", ".join(f"{n} [{a + w - 1}:{a}]" for n, (a, w) in structs(cfg)["alu"].items()))
    raw = (Path(path) / bundle.manifest["program"]).read_bytes()
    seen = set()
    for k in range(0, len(raw), 16):
        word = raw[k:k + 16]
        insn = decode_insn(word, cfg)
        if not isinstance(insn, AluInsn) or word in seen:
            continue
        seen.add(word)
        value = int.from_bytes(word, "little")
        print(f"  {value >> 64:016x} {value & (2**64 - 1):016x}  {ALU_NAMES[insn.alu_opcode].upper()} "
              f"imm={insn.imm} use_imm={int(insn.use_imm)} uop=[{insn.uop_bgn},{insn.uop_end}) "
              f"iter {insn.iter_out}x{insn.iter_in} dst {insn.dst_factor_out},{insn.dst_factor_in} "
              f"src {insn.src_factor_out},{insn.src_factor_in}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
