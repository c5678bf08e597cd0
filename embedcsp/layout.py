"""Memory layouts that follow from an embedding.

The embedding turns the operator into one array of hardware elements per
instruction operand, with one axis per lane class the operand moves along
(`operand_axes`): the first input (row, red), the second (col, red), the
output (row, col); on VTA
  inp [rows, red, BATCH, BLOCK_IN]   wgt [cols, red, BLOCK_OUT, BLOCK_IN]
  acc [rows, cols, BATCH, BLOCK_OUT]
For every lane of every element, `element_map` gives the flat index of the
tensor element it holds, or -1 for a zero (padding lane or conv zero padding).
An input element may appear many times (im2col); an output element once.
This map is the host-side layout transformation, and also layout.npz.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from embedcsp.embedding import Embedding, axis_coords
from embedcsp.operator import Tensor


def operand_axes(emb: Embedding, operand: str) -> tuple[str, ...]:
    """The lane classes (matrix axes) a pattern operand moves along, outer first: the
    batch axis where the embedding has one, then the first input's (row, red), the
    second's (col, red) or the output's (row, col)."""
    pattern = emb.accelerator.pattern
    own = {pattern.inputs[0].name: ("row", "red"), pattern.inputs[1].name: ("col", "red"),
           pattern.output.name: ("row", "col")}
    if operand not in own:
        raise KeyError(f"{operand!r} is not an operand of {pattern.statement()!r}")
    return (("bat",) if "bat" in emb.classes else ()) + own[operand]


def element_map(emb: Embedding, operand: str) -> np.ndarray:
    """int32 [n per axis..., lanes per axis...]: tensor flat index per packed lane, -1 for zero.

    `operand` is a pattern operand name; the axes are `operand_axes(emb, operand)`, the
    lanes of each axis those of its lane class (`Embedding.class_lanes`, its pattern dims'
    lanes flattened in the pattern's dim order). Built a slab of the first axis at a time,
    so peak memory stays near the map itself (the K=500000 DeepBench GEMMs have maps of
    half a billion lanes).
    """
    axes = operand_axes(emb, operand)
    tensor = emb.operator.tensor(emb.bound[operand])
    counts = [emb.axis_length(a) for a in axes]
    lanes = [emb.class_lanes(a) for a in axes]
    rank = len(axes)
    out = np.empty((*counts, *lanes), np.int32)

    def along(k: int, lo: int, hi: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        # Axis k's coordinates, shaped to broadcast over the whole (slab of the) map.
        c, v = axis_coords(emb, axes[k], np.arange(lo, hi)[:, None], np.arange(lanes[k])[None, :])
        shape = [1] * (2 * rank)
        shape[k], shape[rank + k] = hi - lo, lanes[k]
        return {d: x.reshape(shape) for d, x in c.items()}, v.reshape(shape)

    rest = [along(k, 0, counts[k]) for k in range(1, rank)]
    inner = math.prod(counts[1:]) * math.prod(lanes)
    slab = max(1, (1 << 22) // max(1, inner))
    for lo in range(0, counts[0], slab):
        hi = min(counts[0], lo + slab)
        coords, valid = along(0, lo, hi)
        coords = dict(coords)
        for c, v in rest:
            coords.update(c)
            valid = valid & v
        shape = (hi - lo, *counts[1:], *lanes)
        out[lo:hi] = tensor_index(tensor, coords, np.broadcast_to(valid, shape))
    return out


def tensor_index(tensor: Tensor, coords: dict[str, np.ndarray], valid: np.ndarray) -> np.ndarray:
    """int32 flat index of the tensor element at each point, -1 where invalid or out of bounds.

    Out-of-bounds reads are conv2d's zero padding.
    """
    flat = np.zeros(valid.shape, np.int64)
    stride = 1
    for index, extent in reversed(list(zip(tensor.access, tensor.shape))):
        value = np.asarray(index.evaluate(coords), np.int64)
        valid = valid & (value >= 0) & (value < extent)
        flat = flat + value * stride
        stride *= extent
    return np.where(valid, flat, -1).astype(np.int32)


@dataclass(frozen=True)
class HostTransform:
    """What the host does to lay a tensor out for the accelerator."""

    tensor: str
    logical_bytes: int
    packed_bytes: int  # bytes written to DRAM, padding included
    duplication: float  # lanes holding a real element / distinct elements held

    def as_dict(self) -> dict:
        return {"tensor": self.tensor, "logical_bytes": self.logical_bytes,
                "packed_bytes": self.packed_bytes, "duplication": round(self.duplication, 4)}


def host_transform(tensor: str, size: int, emap: np.ndarray) -> HostTransform:
    seen = np.zeros(size, bool)
    real = 0
    for part in emap.reshape(len(emap), -1):  # one slab at a time: no full-size temporaries
        held = part[part >= 0]
        seen[held] = True
        real += held.size
    distinct = int(seen.sum())
    return HostTransform(tensor, size, int(emap.size), real / distinct if distinct else 0.0)
