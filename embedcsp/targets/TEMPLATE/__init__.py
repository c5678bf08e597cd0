"""TEMPLATE: the smallest complete accelerator family, to copy when you add your own back end
(docs/template-family.md, docs/targets.md "Adding a family").

The machine: one instruction, any einsum `O[...] += A[...] * B[...]` the ISA file states,
int8 inputs, an int32 accumulator tile. A program is a CONFIG record and then one MMA record
per instruction instance, reading its input tiles from DRAM and (on the last step of a
reduction) writing the output tile back through an epilogue (int32, wrap or saturate).

    config.py  the ISA file's tables -> TemplateConfig; the tile layout the statement implies
    build.py   embedding -> Plan, Program (records, element maps, DRAM regions); program.bin's
               writer; the host side (DRAM image, outputs read back, layout.npz)
    model.py   program.bin's own reader, and the functional model (Pattern.contract, batched)
    cost.py    cycle model and roofline
    bundle.py, report.py
               the family's part of bundles and reports

program.bin: little-endian records of 32 bytes.

    byte   CONFIG (record 0, exactly once)          MMA (every other record)
    0      opcode 1                                 opcode 2
    1      epilogue: 0 int32, 1 wrap, 2 saturate    flags: 1 ACCUMULATE, 2 WRITEBACK
    2..3   zero                                     zero
    4..19  u32 x4: instance counts bat, row,        u32 x4: this instance's tile index
           col, red (each at least 1)               along bat, row, col, red
    20..31 u32 x3: byte offsets of regions A,       zero
           B and O in the DRAM image

An MMA without ACCUMULATE starts the accumulator from its product; with it, adds (wrapping at
32 bits). WRITEBACK then stores the accumulator, through the epilogue, to output tile
(bat, row, col). Region layout: build.py's docstring.

To start your own family from this one (tests/test_template_family.py does exactly this):
  1. copy this directory into your own package, e.g. `mychip_embedcsp/`; every import inside
     it is relative (`from .config import ...`), so it works under any name;
  2. replace every `TEMPLATE` in its files with your family's name (a plain text substitution:
     `sed -i 's/TEMPLATE/mychip/g' mychip_embedcsp/*.py`); `config.NAME` is what the
     registry checks;
  3. declare the entry point in your pyproject.toml and install your package:
         [project.entry-points."embedcsp.targets"]
         mychip = "mychip_embedcsp:FAMILY"
  4. write an ISA file with `[accelerator] family = "mychip"` (isa/template_mma_8x8x8.toml is
     one) and run `embedcsp solve gemm --m 30 --n 20 --k 50 --isa mychip.toml`;
  5. then make it yours: your config keys (config.py), your instruction stream and DRAM layout
     (build.py), a model of your hardware that reads your binary (model.py), your timing
     (cost.py). Nothing in embedcsp's core needs to change.
"""

from __future__ import annotations

from embedcsp.errors import BadInput, NoEmbedding
from embedcsp.targets.family import PackageParts

from . import config as _config

NAME = _config.NAME


class TemplateFamily(PackageParts):
    """The stages the core asks of a family (embedcsp/targets/family.py)."""

    name = NAME
    reference = None  # no fixed mapping to compare the solver with (`--strategy reference` is refused)
    forms: tuple = ()  # no layout besides the packed matrices of embedcsp.layout.element_map
    epilogues = ("int32", "wrap", "saturate")  # what WRITEBACK can apply; the first is the default
    default_board = "generic"  # the cycle model's board when the user names none (cost.BOARDS)

    def load(self, doc, source):
        return _config.load(doc, source)

    def describe(self, acc) -> list[str]:
        return _config.describe(acc.config)

    def check_board(self, name: str) -> None:
        from .cost import BOARDS

        if name not in BOARDS:
            raise BadInput(f"the {NAME} family has no board {name!r}: its cycle model needs only the "
                           "ISA file; leave --board out or give 'generic'")

    def reference_pins(self, op):
        raise NoEmbedding(f"the {NAME} family has no reference mapping; use --strategy csp")

    def build(self, embedding, options):
        from .build import build

        return build(embedding, options)

    def execute(self, compiled, inputs, progress=None):
        """program.bin, encoded and read back by the model's own reader, run on the DRAM image."""
        from .build import dram_image, output_where, read_output
        from .model import run_program

        program, op = compiled.program, compiled.operator
        final, counters = run_program(program.to_bytes(), dram_image(program, inputs), program.config)
        got = read_output(final, output_where(program, op.output.shape), program.epilogue)
        return {op.output.name: got}, counters

    def cost(self, compiled):
        from .cost import cost

        return cost(compiled.program)

    def roofline(self, compiled):
        from .cost import roofline

        return roofline(compiled.program, compiled.operator)


FAMILY = TemplateFamily()
