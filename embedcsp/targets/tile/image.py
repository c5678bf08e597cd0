"""The host's side of a tile program: the DRAM image from logical tensors, the outputs read
back, and layout.npz (docs/tile.md section 10, "DRAM image").

Each input operand's region holds its tiles back to back, tile t at t x tile bytes, lanes in
the operand's statement dim order, elements in the operand's dtype: a lane holds the int8
tensor element its packed index names (sign-extended to the type), 0 for padding. A uint8
operand cannot hold int8 data, so it holds v + 128 (padding included), and the output tiles
start from a correction loaded from the "bias" region, computed from the same data:

    sum (a + oa)(b + ob) = sum ab + ob * sum a + oa * sum b + oa * ob * R
    correction = -(ob * Sa + oa * Sb + oa * ob * R)

where Sa (Sb) sums the first (second) input over the reduction of each output element and R
counts the reduction lanes; the accumulator wraps modulo its width, so the result is exact
in every lane that the int32 ground truth fixes.
"""

from __future__ import annotations

import math
import string

import numpy as np

from embedcsp.targets.tile.blocked import dim_class
from embedcsp.targets.tile.codegen import Layout


def _wrap_bytes(values: np.ndarray, numpy_type: str) -> np.ndarray:
    """Values (int64) reduced modulo the type's width, as its little-endian bytes."""
    dt = np.dtype(numpy_type)
    bits = 8 * dt.itemsize
    raw = np.asarray(values, np.int64) & ((1 << bits) - 1) if bits < 64 else np.asarray(values, np.int64)
    return raw.astype(dt.str.replace("i", "u")).view(np.uint8)


def packed_values(layout: Layout, operand: str, data: np.ndarray) -> np.ndarray:
    """int64 [tiles..., *tile_shape]: the logical values each lane holds (0 for padding)."""
    index = layout.packed[operand]
    flat = np.asarray(data).reshape(-1).astype(np.int64)
    return np.where(index >= 0, flat[np.maximum(index, 0)], 0)


def _subscripts(layout: Layout, operand: str) -> str:
    """einsum letters of a packed array: upper case for its classes, lower case for its dims."""
    pattern = layout.config.pattern
    letters = {d: string.ascii_lowercase[i] for i, d in enumerate(pattern.dim_names)}
    cls = "".join({"bat": "B", "row": "R", "col": "C", "red": "K"}[c] for c in layout.axes[operand])
    return cls + "".join(letters[d] for d in pattern.operand(operand).dims)


def correction(layout: Layout, values: dict[str, np.ndarray]) -> np.ndarray:
    """int64 [out tiles..., *out tile]: what each output lane starts from (module docstring)."""
    cfg = layout.config
    a_name, b_name, o_name = cfg.operand_names
    pattern = cfg.pattern
    red_dims = [d for d in pattern.dim_names if dim_class(pattern, d) == "red"]
    out_sub = _subscripts(layout, o_name)
    out_shape = layout.packed[o_name].shape

    def summed(q: str) -> np.ndarray:
        """The operand summed over the reduction, broadcast to the output's shape."""
        sub = _subscripts(layout, q)
        keep = "".join(ch for ch in sub if ch in out_sub)
        s = np.einsum(f"{sub}->{keep}", values[q])
        shape = [s.shape[keep.index(ch)] if ch in keep else 1 for ch in out_sub]
        perm = [keep.index(ch) for ch in out_sub if ch in keep]
        return np.broadcast_to(s.transpose(perm).reshape(shape), out_shape)

    oa, ob = layout.offset(a_name), layout.offset(b_name)
    n_red = layout.packed[a_name].shape[list(layout.axes[a_name]).index("red")] \
        if "red" in layout.axes[a_name] else 1
    lanes = n_red * math.prod(pattern.extents[d] for d in red_dims)
    corr = np.full(out_shape, -oa * ob * lanes, np.int64)
    if ob:
        corr = corr - ob * summed(a_name)
    if oa:
        corr = corr - oa * summed(b_name)
    return corr


def dram_image(layout: Layout, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The DRAM image at start: packed inputs, corrections, zeros where outputs go."""
    cfg = layout.config
    dram = np.zeros(layout.dram_size, np.uint8)
    values = {}
    for q in cfg.operand_names[:2]:
        values[q] = packed_values(layout, q, inputs[layout.tensors[q]])
        raw = _wrap_bytes(values[q] + layout.offset(q), cfg.dtype(q).numpy)
        r = layout.regions[q]
        dram[r.offset:r.offset + r.size] = raw.reshape(-1)
    if layout.bias:
        o_name = cfg.operand_names[2]
        raw = _wrap_bytes(correction(layout, values), cfg.dtype(o_name).numpy)
        r = layout.regions["bias"]
        dram[r.offset:r.offset + r.size] = raw.reshape(-1)
    return dram


def output_dram(layout: Layout, shape: tuple[int, ...]) -> np.ndarray:
    """int64 of the output's logical shape: the DRAM byte where each output element is stored."""
    o_name = layout.config.operand_names[2]
    region = layout.regions[o_name]
    index = layout.packed[o_name].reshape(-1)
    lanes = np.flatnonzero(index >= 0)
    where = np.full(math.prod(shape), -1, np.int64)
    where[index[lanes]] = region.offset + lanes * region.elem_bytes
    if (where < 0).any():
        raise AssertionError("an output element has no lane in the program")
    return where.reshape(shape)


def read_output(dram: np.ndarray, where: np.ndarray, epilogue: str) -> np.ndarray:
    """The output tensor from a final image: int8, or int32 for the int32 epilogue."""
    if epilogue != "int32":
        return dram[where].view(np.int8)
    raw = dram[where[..., None] + np.arange(4)]
    return np.ascontiguousarray(raw).view("<i4")[..., 0].astype(np.int32)


def layout_arrays(layout: Layout, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """layout.npz: T_dram/T_index of every input lane holding a real element (the byte of the
    element's lowest address), T_dram of the output's logical shape."""
    cfg = layout.config
    out: dict[str, np.ndarray] = {}
    for q in cfg.operand_names[:2]:
        index = layout.packed[q].reshape(-1)
        lanes = np.flatnonzero(index >= 0)
        r = layout.regions[q]
        t = layout.tensors[q]
        out[f"{t}_dram"] = (r.offset + lanes * r.elem_bytes).astype(np.int64)
        out[f"{t}_index"] = index[lanes].astype(np.int64)
    o_name = cfg.operand_names[2]
    out[f"{layout.tensors[o_name]}_dram"] = output_dram(layout, shapes[layout.tensors[o_name]])
    return out


def inputs_from_image(layout: Layout, dram: np.ndarray, arrays: dict[str, np.ndarray],
                      sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """The logical int8 inputs a bundle reader wrote into an image through layout.npz (one byte
    per element, at T_dram); elements no lane holds are 0."""
    out = {}
    for q in layout.config.operand_names[:2]:
        t = layout.tensors[q]
        data = np.zeros(sizes[t], np.int8)
        data[arrays[f"{t}_index"]] = dram[arrays[f"{t}_dram"]].view(np.int8)
        out[t] = data
    return out
