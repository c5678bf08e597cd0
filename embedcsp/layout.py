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

from dataclasses import dataclass

import numpy as np

from embedcsp.embedding import Embedding, axis_coords
from embedcsp.operator import Tensor

def operand_axes(emb: Embedding, operand: str) -> tuple[str, str]:
    """The lane classes (matrix axes) a pattern operand moves along, outer first."""
    pattern = emb.accelerator.pattern
    if operand == pattern.inputs[0].name:
        return ("row", "red")
    if operand == pattern.inputs[1].name:
        return ("col", "red")
    if operand == pattern.output.name:
        return ("row", "col")
    raise KeyError(f"{operand!r} is not an operand of {pattern.statement()!r}")


def element_map(emb: Embedding, operand: str) -> np.ndarray:
    """int32 [n0, n1, lanes0, lanes1]: tensor flat index per packed lane, -1 for zero.

    `operand` is a pattern operand name; the axes are `operand_axes(emb, operand)`, the
    lanes of each axis those of its lane class.

    Built a slab of the first axis at a time, so peak memory stays near the
    map itself (the K=500000 DeepBench GEMMs have maps of half a billion lanes).
    """
    a0, a1 = operand_axes(emb, operand)
    tensor = emb.operator.tensor(emb.bound[operand])
    n0, n1 = emb.axis_length(a0), emb.axis_length(a1)
    l0, l1 = emb.group(a0).lanes, emb.group(a1).lanes
    out = np.empty((n0, n1, l0, l1), np.int32)
    c1, v1 = axis_coords(emb, a1, np.arange(n1)[:, None], np.arange(l1)[None, :])
    c1 = {d: v.reshape(1, n1, 1, l1) for d, v in c1.items()}
    v1 = v1.reshape(1, n1, 1, l1)
    slab = max(1, (1 << 22) // max(1, n1 * l0 * l1))
    for lo in range(0, n0, slab):
        hi = min(n0, lo + slab)
        c0, v0 = axis_coords(emb, a0, np.arange(lo, hi)[:, None], np.arange(l0)[None, :])
        coords = {d: v.reshape(hi - lo, 1, l0, 1) for d, v in c0.items()}
        coords.update(c1)
        shape = (hi - lo, n1, l0, l1)
        valid = v0.reshape(hi - lo, 1, l0, 1) & v1
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
