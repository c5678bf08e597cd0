"""The TEMPLATE family's part of a program bundle (docs/bundle-format.md).

Manifest keys only a TEMPLATE bundle has:
    isa           "TEMPLATE"
    TEMPLATE      the description's tables: intrinsic (statement, lanes), template_config
    insn_count    records in program.bin (32 bytes each, CONFIG included)
    record_bytes  32
    plan          instance counts along bat, row, col, red
    regions       per pattern operand: offset, size and element bytes in dram.bin
The input bytes of dram.bin are int8 elements, one byte each, so a bundle reader that places
inputs through layout.npz has written the whole image: the bundle runs as it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedcsp.errors import BadInput, IsaError

from . import model
from .build import RECORD_BYTES, dram_image, layout_arrays, read_output
from .config import NAME, TemplateConfig, config_from_doc


def manifest_fields(compiled) -> dict:
    program, plan = compiled.program, compiled.plan
    return {
        "isa": NAME,
        NAME: program.config.tables(),
        "insn_count": len(program),
        "record_bytes": RECORD_BYTES,
        "plan": plan.as_dict(),
        "regions": {q: {"offset": r.offset, "size": r.size, "elem_bytes": r.elem_bytes}
                    for q, r in program.regions.items()},
    }


def files(compiled, inputs: dict[str, np.ndarray]) -> tuple[bytes, np.ndarray, dict[str, np.ndarray]]:
    """(program.bin, dram.bin, layout.npz arrays)."""
    program = compiled.program
    return (program.to_bytes(), dram_image(program, inputs),
            layout_arrays(program, compiled.operator.output.shape))


def read_config(m) -> TemplateConfig:
    """The manifest's description, checked as an ISA file is."""
    tables = m.obj(m.doc, NAME, NAME)
    try:
        return config_from_doc({"accelerator": {"name": "bundle", "family": NAME}, **tables}, NAME)
    except IsaError as exc:
        raise m.bad(f"the {NAME} description: {exc}") from None


def read_program(m, file: Path, cfg: TemplateConfig, dram_bytes: int) -> model.Decoded:
    """program.bin, as many records as insn_count, decoded by the model's reader, its regions
    inside dram.bin."""
    count = m.int_(m.doc, "insn_count", "insn_count", 1)
    size = file.stat().st_size
    if size != count * RECORD_BYTES:
        raise BadInput(f"{file} is {size} bytes, but the manifest's insn_count {count} needs "
                       f"{count * RECORD_BYTES} ({RECORD_BYTES}-byte records)")
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise BadInput(f"{file}: cannot read it ({exc.strerror or exc})") from None
    try:
        decoded = model.decode(raw, cfg)
        model.check_fits(decoded, cfg, dram_bytes)
    except ValueError as exc:
        raise BadInput(f"{file}: {exc}") from None
    return decoded


def run_image(bundle, dram: np.ndarray, out_dram: np.ndarray):
    """(the output read through out_dram, counters): the bundle's program run on `dram`."""
    program: model.Decoded = bundle.program
    if program.epilogue != bundle.epilogue.kind:
        raise BadInput(f"{bundle.path}: program.bin applies the {program.epilogue} epilogue, but the "
                       f"manifest says {bundle.epilogue.kind}")
    final, counters = model.run(program, dram, bundle.config)
    return read_output(final, out_dram, program.epilogue), counters
