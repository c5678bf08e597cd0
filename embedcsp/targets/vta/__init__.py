"""The VTA family (docs/vta.md): VTA's GEMM core and its variants, described by the ten
vta_config numbers of an ISA file.

    config.py      the description and what derives from it; the ISA file loader
    plan.py, steps.py, hazard.py, codegen.py, direct.py, build.py
                   tiling, tile steps and slots, the GEMM hazard, code generation
                   (packed-matrix form and direct conv form), the best program
    encoding.py    instructions and micro-ops at bit level (the compiler's writer)
    decode.py, functional.py, execute.py
                   the functional model's own reader of binaries, the model, a run
    timing.py      the cycle model and the roofline

`FAMILY` is what the registry (embedcsp/targets/registry.py) hands the core.
"""

from __future__ import annotations

import numpy as np

from embedcsp.accelerator import Accelerator
from embedcsp.progress import SILENT, Progress
from embedcsp.targets.family import PackageParts


class VtaFamily(PackageParts):
    """The stages the core asks of a family, for VTA."""

    @property
    def forms(self) -> tuple:
        """Layout forms besides the packed matrix that its code generator emits."""
        from embedcsp.targets.vta.forms import DIRECT

        return (DIRECT,)

    name = "vta"
    # STORE keeps an accumulator's low 8 bits; the ALU can shift (arithmetically) and clip first.
    epilogues = ("wrap", "requant/floor", "saturate")
    default_board = "pynq"
    reference = "VTA's fixed TVM mapping, solved with the mapping pinned"

    def load(self, doc: dict, source: str) -> Accelerator:
        """An ISA file's tables ([accelerator], [vta_config], [intrinsic]) to an Accelerator."""
        from embedcsp.targets.vta.config import vta_from_dict

        return vta_from_dict(doc, source)

    def describe(self, acc: Accelerator) -> list[str]:
        """What this family derives from the description: buffers, element sizes, field widths."""
        from embedcsp.targets.vta.config import MEM_ACC, MEM_INP, MEM_UOP, MEM_WGT
        from embedcsp.targets.vta.encoding import layouts
        from embedcsp.targets.vta.plan import MAX_LOOP
        from embedcsp.targets.vta.timing import BOARDS

        cfg = acc.config
        lines = [f"bitstream  {cfg.bitstream_tag()}: BATCH {cfg.batch}, BLOCK_IN {cfg.block_in}, "
                 f"BLOCK_OUT {cfg.block_out}, {cfg.batch * cfg.block_in * cfg.block_out} MACs per GEMM micro-op"]
        for name, mem in (("UOP", MEM_UOP), ("INP", MEM_INP), ("WGT", MEM_WGT), ("ACC", MEM_ACC)):
            lines.append(f"buffer     {name:3s} {cfg.depth(mem):6d} elements of {cfg.elem_bytes(mem):6d} B "
                         f"({cfg.depth(mem) * cfg.elem_bytes(mem) // 1024} KiB)")
        lay = layouts(cfg)
        for kind, fields in (("GEMM", lay.gemm), ("ALU", lay.alu), ("LOAD/STORE", lay.mem)):
            used = max(pos + width for _, pos, width in fields)
            text = ", ".join(f"{n} [{pos + w - 1}:{pos}]" for n, pos, w in fields if n not in
                             ("opcode", "pop_prev", "pop_next", "push_prev", "push_next"))
            lines.append(f"encoding   {kind} ({used} of 128 bits): {text}")
        uop = ", ".join(f"{n} [{pos + w - 1}:{pos}]" for n, pos, w in lay.uop)
        lines.append(f"encoding   micro-op (32 bits): {uop}")
        lines.append(f"limits     loop counts <= {MAX_LOOP}, LOAD padding <= 15 per side, row pitch "
                     f"<= 65535 elements, requant shift 0..15")
        lines.append(f"boards     {', '.join(f'{b.name} ({b.clock_mhz:g} MHz, {b.bus_bytes} B/cycle)' for b in BOARDS.values())}")
        return lines

    def reference_pins(self, op):
        """The CSP pins of VTA's fixed TVM mapping for `op` (docs/vta.md section 8)."""
        from embedcsp.targets.vta.reference import reference_pins

        return reference_pins(op)

    def check_board(self, name: str) -> None:
        """BadInput for a board the cycle model does not know."""
        from embedcsp.targets.vta.timing import board

        board(name)

    def build(self, embedding, options):
        """(plan, program): the best program for the embedding under the options."""
        from embedcsp.targets.vta.build import best_program

        return best_program(embedding, options)

    def modelled_cycles(self, embedding, options) -> int:
        """The cycles of the program `build` would return, costed at tile-step granularity
        without generating it (stepcost.py; equal to `cost` of the built program)."""
        from embedcsp.targets.vta.build import modelled_cycles

        return modelled_cycles(embedding, options)

    def execute(self, compiled, inputs: dict[str, np.ndarray], progress: Progress = SILENT):
        """(outputs by tensor name, counters): the program run as a binary in the model."""
        from embedcsp.targets.vta.execute import execute

        return execute(compiled.program, compiled.operator, compiled.accelerator.pattern, inputs, progress)

    def cost(self, compiled):
        """The cycle model's Timing of the program on the options' board."""
        from embedcsp.targets.vta.timing import board, simulate

        return simulate(list(compiled.program.insns), compiled.accelerator.config,
                        board(compiled.options.board))

    def roofline(self, compiled):
        """The bound no program of this operator can beat on the options' board: the elements
        the operator really reads, at the width of the buffer each tensor is bound to."""
        from embedcsp.footprint import footprint
        from embedcsp.targets.vta.timing import board, roofline

        op, cfg = compiled.operator, compiled.accelerator.config
        width = {"inp": cfg.LOG_INP_WIDTH, "wgt": cfg.LOG_WGT_WIDTH}
        fp = footprint(op)
        bound = compiled.embedding.bound
        read = sum(fp.of(bound[q]) * (1 << width[q]) // 8 for q in ("inp", "wgt"))
        write = fp.written * (1 << cfg.LOG_INP_WIDTH) // 8  # STORE writes OUT, of the input width
        return roofline(op.macs, read, write, cfg, board(compiled.options.board))


FAMILY = VtaFamily()
