"""What the core asks of an accelerator family (docs/targets.md).

The core (pipeline, verify, report, cli, bench) holds a family only through
this protocol, found by name in the registry (targets/registry.py). The plan,
program and counters a family returns are its own types: the core passes them
back to the same family and reads nothing in them but what the methods below
promise.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Protocol

import numpy as np

from embedcsp.accelerator import Accelerator
from embedcsp.progress import Progress


class Timing(Protocol):
    cycles: int  # modelled cycles of the whole program
    seconds: float  # cycles at the board's clock
    board: str

    def as_dict(self) -> dict: ...


class Roofline(Protocol):
    cycles: int  # the bound
    compute_cycles: int
    memory_cycles: int

    def efficiency(self, cycles: int) -> float: ...


class Family(Protocol):
    name: str  # the `[accelerator] family` of its ISA files
    # What `--strategy reference` means on this family, for reports; None: it has no fixed
    # mapping (bench then runs the solver's embedding alone).
    reference: str | None
    forms: tuple  # layout forms besides the packed matrix that its code generator emits
    # Epilogue names (reference.Epilogue.name: "wrap", "saturate", "requant/floor",
    # "requant/nearest_even", "int32") its hardware can apply; the first is the default.
    epilogues: tuple[str, ...]
    default_board: str  # the board of its cycle model when the user names none

    def load(self, doc: dict, source: str) -> Accelerator:
        """A parsed ISA file to a validated Accelerator; IsaError naming `source` otherwise."""

    def describe(self, acc: Accelerator) -> list[str]:
        """Lines of what the family derives from a description (`embedcsp isa show`)."""

    def check_board(self, name: str) -> None:
        """BadInput unless the cycle model knows the board `name`."""

    def reference_pins(self, op) -> Any:
        """csp.Pins fixing the mapping of `--strategy reference`; NoEmbedding where it has none."""

    def build(self, embedding, options) -> tuple[Any, Any]:
        """(plan, program) for an embedding; NoEmbedding if nothing fits the hardware."""

    def execute(self, compiled, inputs: dict[str, np.ndarray],
                progress: Progress) -> tuple[dict[str, np.ndarray], Any]:
        """Run the compiled program as the hardware would read it, in the family's functional
        model: (output tensors by name, counters with as_dict()); ProgramError if refused."""

    def cost(self, compiled) -> Timing:
        """The cycle model's verdict on the compiled program, on `compiled.options.board`."""

    def roofline(self, compiled) -> Roofline:
        """The bound no program of this operator can beat on that board."""

    @property
    def report(self) -> Any:
        """The family's part of reports, a module or object with:
        program_lines(compiled, verification, timing) -> list[str]: its lines of the text report
            (plan, program, execution, traffic);
        program_fields(compiled, verification) -> dict: the same facts for `--json`;
        bench_columns(compiled, verification) -> dict: `gemm_uops` (instruction instances
            executed), `dram_load_bytes`, `dram_store_bytes` and `instructions` (program length)
            for the bench CSV."""

    @property
    def bundle(self) -> Any:
        """The family's bundle format, a module or object with:
        manifest_fields(compiled) -> dict: the manifest keys only this family's bundles have, at
            least `isa` (its name) and its config table (docs/bundle-format.md);
        files(compiled, inputs) -> (program file bytes, the DRAM image at start, layout.npz arrays);
        read_config(m): its config from a manifest, through bundle.py's typed reader `m` (BadInput
            naming the field for anything malformed);
        read_program(m, file, config, dram_bytes): the program file as the functional model
            decodes it, checked against the DRAM size; it has a length (instructions);
        run_image(bundle, dram, out_dram) -> (the output tensor read through `out_dram`,
            counters with gemm_uops): a read bundle run on `dram`."""


class PackageParts:
    """`report` and `bundle` as a family package's own report.py and bundle.py, for a family
    class defined in its package's __init__.py (every built-in family, and TEMPLATE's copies)."""

    @property
    def report(self):
        return import_module(f"{type(self).__module__}.report")

    @property
    def bundle(self):
        return import_module(f"{type(self).__module__}.bundle")
