"""The ground truth of any affine operator, from its access maps alone.

    out[f(x)] += in0[g(x)] * in1[h(x)]   for every point x of the iteration domain

where every index of f, g, h is affine in the dims, and an input index outside its
tensor reads zero. Nothing here reads an operator's kind or parameters, and nothing
is shared with the compiler (csp, embedding, layout, targets): a program can only be
"verified" against the semantics its operator states (docs/bundle-format.md).

How it stays exact and fast. Some dims are *enumerated* (a conv's filter taps r, s):
chosen greedily until every input index holds at most one of the other, *free*, dims.
For each value of the enumerated dims, an input becomes a gather along its axes (each
axis a free dim with a stride, or a fixed position), zero where out of bounds, and the
products are one einsum over the free dims in float64 BLAS. Products of int8 values are
at most 2^14 in size, so slices of the reduction keep every partial sum below 2^53,
where float64 is exact; the int64 sums then wrap to int32 as the accumulators do.
"""

from __future__ import annotations

import itertools
import math
import string

import numpy as np

from embedcsp.errors import BadInput
from embedcsp.operator import AffineIndex, Operator

_EXACT_TERMS = (2**53 - 1) // (128 * 128)  # int8 products that float64 sums exactly
_GATHER_ELEMENTS = 1 << 25  # float64 elements of one gathered operand slice (256 MiB)


def accumulate(op: Operator, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """int32 sum of every output element of `op` on int8 `inputs` (logical shapes)."""
    if len(op.inputs) != 2:
        raise BadInput(f"{op.describe()}: the ground truth takes two input tensors, not {len(op.inputs)}")
    out = op.output
    for index in out.access:
        if len(index.dims) != 1 or index.const != 0 or [c for _, c in index.terms if c] != [1]:
            raise BadInput(f"{op.describe()}: output index {index} is not one dim; the ground truth "
                           "writes each output element at the point of its own dims")
    ext = op.extents
    enumerated = _enumerated_dims(op)
    free = [d for d in ext if d not in enumerated]
    letter = dict(zip(free, string.ascii_letters))
    total = np.zeros(out.shape, np.int64)
    out_dims = [next(iter(ix.dims)) for ix in out.access]
    reduced = [d for d in free if d not in out_dims]
    # Split the longest free reduction dim so each einsum's sums stay exact and its gathers small.
    split, step = _reduction_split(op, free, reduced)
    for fixed_values in itertools.product(*(range(ext[d]) for d in enumerated)):
        fixed = dict(zip(enumerated, fixed_values))
        for lo in range(0, ext[split], step) if split else [0]:
            window = {split: (lo, min(ext[split], lo + step))} if split else {}
            operands, specs = [], []
            for t in op.inputs:
                arr, spec = _gather(inputs[t.name], t.access, fixed, ext, letter, window)
                operands.append(arr)
                specs.append(spec)
            target = "".join(letter[d] for d in out_dims if d in letter)
            part = np.einsum(f"{specs[0]},{specs[1]}->{target}", *operands, optimize=True)
            where = tuple(fixed[d] if d in fixed else slice(None) for d in out_dims)
            total[where] += np.rint(part).astype(np.int64)
    return total.astype(np.int32)  # two's complement wrap, as the int32 accumulators


def _enumerated_dims(op: Operator) -> list[str]:
    """Dims to enumerate so that every input index holds at most one other dim: repeatedly the
    smallest dim of an index that still holds two or more."""
    ext = op.extents
    chosen: list[str] = []
    while True:
        crowded = [ix.dims - set(chosen) for t in op.inputs for ix in t.access]
        crowded = [ds for ds in crowded if len(ds) > 1]
        if not crowded:
            return chosen
        chosen.append(min((d for ds in crowded for d in ds), key=lambda d: (ext[d], d)))


def _reduction_split(op: Operator, free: list[str], reduced: list[str]) -> tuple[str | None, int]:
    """(a free reduction dim to cut, its slice length), or (None, 0) when no cut is needed."""
    if not reduced:
        return None, 0
    ext = op.extents
    longest = max(reduced, key=lambda d: ext[d])
    others = math.prod(ext[d] for d in reduced if d != longest)
    exact = max(1, _EXACT_TERMS // max(1, others))
    # The larger input's gather grows with the cut dim: keep it near _GATHER_ELEMENTS.
    widest = max(math.prod(ext[d] for d in free if any(d in ix.dims for ix in t.access) and d != longest)
                 for t in op.inputs)
    small = max(1, _GATHER_ELEMENTS // max(1, widest))
    step = min(ext[longest], exact, small)
    return (longest, step) if step < ext[longest] else (None, 0)


def _gather(tensor: np.ndarray, access: tuple[AffineIndex, ...], fixed: dict[str, int],
            ext: dict[str, int], letter: dict[str, str], window: dict[str, tuple[int, int]]
            ) -> tuple[np.ndarray, str]:
    """The input's elements read at every point of its free dims (float64, zero out of bounds),
    and the einsum subscripts of the result's axes."""
    index_arrays, spec = [], ""
    for axis, ix in enumerate(access):
        base = ix.const + sum(c * fixed[d] for d, c in ix.terms if d in fixed)
        free = [(d, c) for d, c in ix.terms if d not in fixed and c != 0]
        if free:
            (d, c), = free
            lo, hi = window.get(d, (0, ext[d]))
            positions = base + c * np.arange(lo, hi)
            spec += letter[d]
        else:
            positions = np.array([base])
        index_arrays.append(positions)
    shape = tensor.shape
    valid = [(p >= 0) & (p < n) for p, n in zip(index_arrays, shape)]
    clipped = [np.where(v, p, 0) for p, v in zip(index_arrays, valid)]
    gathered = tensor[np.ix_(*clipped)].astype(np.float64)
    mask = np.ones(gathered.shape, bool)
    for axis, v in enumerate(valid):
        view = [1] * len(shape)
        view[axis] = len(v)
        mask &= v.reshape(view)
    gathered *= mask
    # Fixed axes have length 1: drop them; the spec names the free ones in order.
    squeeze = tuple(a for a, ix in enumerate(access)
                    if not any(d not in fixed and c != 0 for d, c in ix.terms))
    return gathered.squeeze(axis=squeeze), spec
