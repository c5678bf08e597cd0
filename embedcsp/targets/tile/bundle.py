"""The tile family's part of the program bundle (docs/bundle-format.md, docs/tile.md section 10):
its manifest keys, program.bin, and what a bundle read back needs before it runs.

Manifest keys of a tile bundle:
    isa          "tile"
    tile         the description's tables: intrinsic (statement, lanes, ii), dtypes, memory, dma
    insn_count   records in program.bin (64 bytes each)
    plan         blocks, loop order, instance counts
    regions      per operand (and "bias"): offset, size and element bytes in dram.bin
    host         per operand: tensor, dtype, the offset added to its int8 data (128 for uint8),
                 its classes and tile grid; the Store epilogue
The input bytes at layout.npz's T_dram are each element's lowest byte; where an operand is
wider than int8, unsigned, or needs correction tiles, the bundle reader rebuilds those bytes
from the int8 values found there (`run_image`), as the host would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedcsp.errors import BadInput, IsaError
from embedcsp.targets.tile.codegen import Layout, Region
from embedcsp.targets.tile.config import TileConfig, tile_config_from_dict
from embedcsp.targets.tile.execute import run_binary
from embedcsp.targets.tile.image import (
    dram_image,
    inputs_from_image,
    layout_arrays,
    read_output,
)
from embedcsp.targets.tile.model import RECORD


def manifest_fields(compiled) -> dict:
    """The manifest keys only a tile bundle has."""
    program, plan = compiled.program, compiled.plan
    cfg, layout = program.config, program.layout
    tables = cfg.tables()
    return {
        "isa": "tile",
        "tile": tables,
        "insn_count": len(program),
        "record_bytes": RECORD,
        "plan": {"block": dict(plan.tiling.block), "order": list(plan.tiling.order),
                 "instances": dict(plan.blocked.counts)},
        "regions": {name: {"offset": r.offset, "size": r.size, "elem_bytes": r.elem_bytes}
                    for name, r in layout.regions.items()},
        "host": {
            "epilogue": layout.epilogue,
            "operands": {q: {"tensor": layout.tensors[q], "dtype": cfg.dtype(q).name,
                             "offset": layout.offset(q) if q != cfg.operand_names[2] else 0,
                             "axes": list(layout.axes[q]),
                             "grid": list(layout.packed[q].shape[:len(layout.axes[q])])}
                         for q in cfg.operand_names},
        },
    }


def files(compiled, inputs: dict[str, np.ndarray]) -> tuple[bytes, np.ndarray, dict[str, np.ndarray]]:
    """(program.bin, dram.bin, layout.npz arrays)."""
    program = compiled.program
    shapes = {t.name: t.shape for t in compiled.operator.tensors}
    return (program.records.tobytes(), dram_image(program.layout, inputs),
            layout_arrays(program.layout, shapes))


def read_config(m) -> TileConfig:
    """The manifest's tile description, checked as an ISA file is."""
    tables = m.obj(m.doc, "tile", "tile")
    doc = {"accelerator": {"name": "bundle", "family": "tile"}, **tables}
    try:
        _, cfg = tile_config_from_dict(doc, "tile")
    except IsaError as exc:
        raise m.bad(f"the tile description: {exc}") from None
    return cfg


@dataclass(frozen=True, eq=False)
class BundleProgram:
    """program.bin as read from a bundle, every record checked by the model's reader."""

    raw: bytes

    def __len__(self) -> int:
        return len(self.raw) // RECORD


def read_program(m, file: Path, cfg: TileConfig, dram_bytes: int) -> BundleProgram:
    """program.bin, whole records, as many as insn_count, decodable by the model's reader."""
    count = m.int_(m.doc, "insn_count", "insn_count", 1)
    size = file.stat().st_size
    if size % RECORD:
        raise BadInput(f"{file} is {size} bytes, not a whole number of {RECORD}-byte records")
    if size // RECORD != count:
        raise BadInput(f"{file} holds {size // RECORD} records, but the manifest's insn_count is {count}")
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise BadInput(f"{file}: cannot read it ({exc.strerror or exc})") from None
    from embedcsp.targets.tile.batched import _esz, _spans, decode_arrays

    try:
        d = decode_arrays(raw, cfg)  # the model's checks of every record, in bulk
    except ValueError as exc:
        raise BadInput(f"{file}: {exc}") from None
    moves = np.flatnonzero(d["queue"] != 1)
    lo, hi, live = _spans(d, moves, _esz(d, cfg, moves))
    outside = live & ((lo < 0) | (hi > dram_bytes))
    if outside.any():
        k = int(np.argmax(outside))
        raise BadInput(f"{file}: record {int(moves[k])} moves dram.bin bytes [{int(lo[k])}, {int(hi[k])}), "
                       f"outside its {dram_bytes} bytes")
    return BundleProgram(raw)


def _layout(bundle) -> Layout:
    """The host layout of a bundle, from its manifest and layout.npz."""
    cfg: TileConfig = bundle.config
    m = bundle.manifest
    file = bundle.path / "manifest.json"

    def bad(msg: str) -> BadInput:
        return BadInput(f"{file}: {msg}")

    try:
        host = m["host"]
        ops = host["operands"]
        regions = {name: Region(int(r["offset"]), int(r["size"]), int(r["elem_bytes"]))
                   for name, r in m["regions"].items()}
        epilogue = str(host["epilogue"])
        axes = {q: tuple(ops[q]["axes"]) for q in cfg.operand_names}
        grids = {q: tuple(int(n) for n in ops[q]["grid"]) for q in cfg.operand_names}
        tensors = {q: str(ops[q]["tensor"]) for q in cfg.operand_names}
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"the tile host layout (host, regions) is incomplete or malformed ({exc!r})") from None
    for r in regions.values():
        if r.offset < 0 or r.size < 0 or r.offset + r.size > len(bundle.dram) or r.elem_bytes < 1:
            raise bad(f"a region {r} lies outside dram.bin")
    packed = {}
    for q in cfg.operand_names:
        region = regions.get(q)
        shape = (*grids[q], *cfg.tile_shape(q))
        if region is None or math.prod(shape) * region.elem_bytes != region.size:
            raise bad(f"region {q} does not hold {shape} elements")
        packed[q] = np.full(math.prod(shape), -1, np.int64)
    lay = bundle.layout
    for q in cfg.operand_names[:2]:
        where, index = lay[f"{tensors[q]}_dram"], lay[f"{tensors[q]}_index"]
        lanes, rest = np.divmod(where - regions[q].offset, regions[q].elem_bytes)
        if (rest != 0).any() or (lanes < 0).any() or (lanes >= packed[q].size).any():
            raise bad(f"layout.npz places {tensors[q]} outside the lanes of region {q}")
        packed[q][lanes] = index
    o_name = cfg.operand_names[2]
    where = lay[f"{tensors[o_name]}_dram"].reshape(-1)
    lanes, rest = np.divmod(where - regions[o_name].offset, regions[o_name].elem_bytes)
    if (rest != 0).any() or (lanes < 0).any() or (lanes >= packed[o_name].size).any():
        raise bad(f"layout.npz places {tensors[o_name]} outside the lanes of region {o_name}")
    packed[o_name][lanes] = np.arange(len(lanes))
    packed = {q: p.reshape(*grids[q], *cfg.tile_shape(q)) for q, p in packed.items()}
    return Layout(cfg, axes, packed, tensors, regions, epilogue)


def run_image(bundle, dram: np.ndarray, out_dram: np.ndarray):
    """(the output read through out_dram, counters): the bundle run on an image whose inputs a
    reader placed through layout.npz; wider, unsigned and correction bytes are rebuilt."""
    layout = _layout(bundle)
    op = bundle.operator
    sizes = {t.name: t.size for t in op.inputs}
    inputs = inputs_from_image(layout, dram, bundle.layout, sizes)
    image = dram.copy()
    rebuilt = dram_image(layout, inputs)
    for name, r in layout.regions.items():
        if name != layout.config.operand_names[2]:
            image[r.offset:r.offset + r.size] = rebuilt[r.offset:r.offset + r.size]
    final, counters = run_binary(bundle.program.raw, image, layout.config)
    return read_output(final, out_dram, layout.epilogue), counters
