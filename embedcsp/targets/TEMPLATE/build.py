"""From an embedding to a TEMPLATE program (the family's `build`), and the host's side of it.

The program is one MMA record per instruction instance, after one CONFIG record; its binary
form, program.bin, is written here (`RECORD`) and read back by model.py with its own reader.
The DRAM image holds three regions, each an array of tiles back to back, a tile's lanes in
`TemplateConfig.storage_dims` order (exactly `embedcsp.layout.element_map`'s order):

    A  the first input's tiles, int8, tile (bat, row, red) at flat index (bat*R + row)*K + red
    B  the second input's tiles, int8, tile (bat, col, red) at (bat*C + col)*K + red
    O  the output's tiles, int8 (wrap, saturate) or int32 little-endian, tile (bat, row, col)
       at (bat*R + row)*C + col; zero at start

where R, C, K are the instance counts along row, col and red (1 for a class the embedding
lacks). Padding lanes hold 0. The loop order is red innermost: the machine has one
accumulator tile, so each output tile's reduction runs back to back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedcsp.embedding import Embedding
from embedcsp.errors import BadInput, NoEmbedding
from embedcsp.layout import element_map

from .config import CLASSES, TemplateConfig

RECORD_BYTES = 32
OP_CONFIG, OP_MMA = 1, 2
ACCUMULATE, WRITEBACK = 1, 2  # MMA flag bits
EPILOGUE_CODES = {"int32": 0, "wrap": 1, "saturate": 2}
MAX_RECORDS = 1 << 23  # 256 MiB of program.bin; refused beyond
MAX_DRAM = 1 << 32  # region offsets are 32-bit
# The writer's view of a record; model.py reads the bytes with its own offsets.
RECORD = np.dtype([("opcode", "u1"), ("byte1", "u1"), ("zero", "<u2"),
                   ("a", "<u4", (4,)), ("b", "<u4", (3,))])
assert RECORD.itemsize == RECORD_BYTES


@dataclass(frozen=True)
class Plan:
    """Instance counts along each matrix axis (CLASSES order); loops nest in that order."""

    counts: tuple[int, int, int, int]

    def as_dict(self) -> dict:
        return dict(zip(CLASSES, self.counts))


@dataclass(frozen=True)
class Region:
    offset: int
    size: int  # bytes
    elem_bytes: int


@dataclass(frozen=True, eq=False)
class Program:
    """What `build` returns: the records, and what the host needs to use them."""

    config: TemplateConfig
    records: np.ndarray  # RECORD array: CONFIG, then one MMA per instance
    element_maps: dict[str, np.ndarray]  # pattern operand -> element_map (flat tensor index, -1 zero)
    tensors: dict[str, str]  # pattern operand -> operator tensor
    regions: dict[str, Region]  # pattern operand -> its region of the DRAM image
    epilogue: str

    def __len__(self) -> int:
        return len(self.records)

    @property
    def dram_size(self) -> int:
        return sum(r.size for r in self.regions.values())

    def to_bytes(self) -> bytes:
        """program.bin."""
        return self.records.tobytes()


def instances(counts: tuple[int, ...]) -> np.ndarray:
    """int64 [n, 4]: every instance's (bat, row, col, red), red innermost."""
    grid = np.indices(counts).reshape(len(counts), -1).T
    return grid.astype(np.int64)


def encode(counts: tuple[int, ...], bases: tuple[int, int, int], epilogue: str) -> np.ndarray:
    """The records: CONFIG (epilogue, counts, region offsets), then the MMAs."""
    idx = instances(counts)
    recs = np.zeros(1 + len(idx), RECORD)
    recs[0] = (OP_CONFIG, EPILOGUE_CODES[epilogue], 0, counts, bases)
    red = idx[:, 3]
    recs["opcode"][1:] = OP_MMA
    recs["byte1"][1:] = np.where(red > 0, ACCUMULATE, 0) | np.where(red == counts[3] - 1, WRITEBACK, 0)
    recs["a"][1:] = idx
    return recs


def build(embedding: Embedding, options) -> tuple[Plan, Program]:
    """The family's `build`: one program per embedding (there is nothing to choose here; a real
    family would rank tilings with its cycle model and raise NoEmbedding if none fits)."""
    cfg: TemplateConfig = embedding.accelerator.config
    epilogue = options.epilogue.kind  # the core has checked it is one of FAMILY.epilogues
    if epilogue not in EPILOGUE_CODES:
        raise NoEmbedding(f"WRITEBACK applies {', '.join(EPILOGUE_CODES)}, not {options.epilogue.name}")
    counts = tuple(embedding.axis_length(c) if c in embedding.classes else 1 for c in CLASSES)
    n = counts[0] * counts[1] * counts[2] * counts[3]
    if n + 1 > MAX_RECORDS:
        raise BadInput(f"{embedding.operator.describe()} needs {n} instructions; the {cfg.tag()} "
                       f"program is capped at {MAX_RECORDS - 1} ({RECORD_BYTES}-byte records)")
    maps = {q: element_map(embedding, q) for q in cfg.operand_names}
    a, b, o = cfg.operand_names
    width = 4 if epilogue == "int32" else 1
    regions, at = {}, 0
    for q, w in ((a, 1), (b, 1), (o, width)):
        regions[q] = Region(at, maps[q].size * w, w)
        at += maps[q].size * w
    if at >= MAX_DRAM:
        raise BadInput(f"{embedding.operator.describe()} needs a {at}-byte DRAM image; the "
                       f"{cfg.tag()} program addresses {MAX_DRAM >> 30} GiB")
    records = encode(counts, (regions[a].offset, regions[b].offset, regions[o].offset), epilogue)
    return Plan(counts), Program(cfg, records, maps, dict(embedding.bound), regions, epilogue)


# ------------------------------------------------------------------ the host's side

def dram_image(program: Program, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The DRAM image at start: packed input tiles, a zeroed output region."""
    dram = np.zeros(program.dram_size, np.uint8)
    for q in program.config.operand_names[:2]:
        emap, r = program.element_maps[q].reshape(-1), program.regions[q]
        data = np.asarray(inputs[program.tensors[q]], np.int8).reshape(-1)
        dram[r.offset:r.offset + r.size] = np.where(emap >= 0, data[np.maximum(emap, 0)], 0).view(np.uint8)
    return dram


def output_where(program: Program, shape: tuple[int, ...]) -> np.ndarray:
    """int64 of the output's logical shape: the DRAM byte where each output element lands."""
    o = program.config.operand_names[2]
    emap, r = program.element_maps[o].reshape(-1), program.regions[o]
    lanes = np.flatnonzero(emap >= 0)
    where = np.full(int(np.prod(shape)), -1, np.int64)
    where[emap[lanes]] = r.offset + lanes * r.elem_bytes
    return where.reshape(shape)


def read_output(dram: np.ndarray, where: np.ndarray, epilogue: str) -> np.ndarray:
    """The output tensor from a final image: int8, or int32 for the int32 epilogue."""
    if epilogue != "int32":
        return dram[where].view(np.int8)
    raw = np.ascontiguousarray(dram[where[..., None] + np.arange(4)])
    return raw.view("<i4")[..., 0].astype(np.int32)


def layout_arrays(program: Program, output_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """layout.npz: T_dram/T_index of every input lane holding a real element, T_dram of the
    output's logical shape (docs/bundle-format.md)."""
    out = {}
    for q in program.config.operand_names[:2]:
        emap, r = program.element_maps[q].reshape(-1), program.regions[q]
        lanes = np.flatnonzero(emap >= 0)
        out[f"{program.tensors[q]}_dram"] = (r.offset + lanes).astype(np.int64)
        out[f"{program.tensors[q]}_index"] = emap[lanes].astype(np.int64)
    o = program.config.operand_names[2]
    out[f"{program.tensors[o]}_dram"] = output_where(program, output_shape)
    return out
