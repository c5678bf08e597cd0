"""What an operator must move at least: the input elements it really reads, the outputs it writes.

This is the memory side of every family's roofline (docs/roofline.md). It is a
property of the operator alone, never of a program or a layout: an input element
counts once if some iteration point reads it inside the tensor's bounds while the
partner element of that product is inside its own bounds too (a data element that
only ever meets padding, or that a stride or a dilation skips, need not move at
all; padding itself is free). Every output element is written.

Index expressions are affine, so the dims split into independent groups: two
dims are in one group when some access of an input names both. The elements of a
tensor that count are the product, over the groups, of the distinct in-bounds
index tuples of that group's axes among the group's points where both inputs stay
in bounds. Each group is enumerated with numpy (a conv's (p, r) pair is a few
thousand points); a group of several dims beyond ENUMERATE_MAX points counts one
element, which keeps the roofline a bound, if a weak one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from embedcsp.operator import Operator, Tensor

ENUMERATE_MAX = 1 << 25  # above MAX_EXTENT, so one-dim groups are always exact  # iteration points of one dim group enumerated exactly


@dataclass(frozen=True)
class Footprint:
    """Elements an operator must read from each input and write, whatever the program."""

    read: tuple[tuple[str, int], ...]  # (input tensor, elements read)
    written: int  # output elements

    @property
    def read_elements(self) -> int:
        return sum(n for _, n in self.read)

    def of(self, tensor: str) -> int:
        return dict(self.read)[tensor]


def footprint(op: Operator) -> Footprint:
    """The elements `op` must read and write (module docstring)."""
    return Footprint(tuple((t.name, read_elements(op, t)) for t in op.inputs), op.output.size)


def _groups(op: Operator) -> list[list[str]]:
    """Dims linked by sharing an input access expression, in operator order."""
    parent = {d.name: d.name for d in op.dims}

    def root(d: str) -> str:
        while parent[d] != d:
            d = parent[d]
        return d

    for t in op.inputs:
        for index in t.access:
            names = sorted(index.dims)
            for a, b in zip(names, names[1:]):
                parent[root(a)] = root(b)
    groups: dict[str, list[str]] = {}
    for d in op.dims:
        groups.setdefault(root(d.name), []).append(d.name)
    return list(groups.values())


def read_elements(op: Operator, t: Tensor) -> int:
    """Distinct elements of input `t` that meet an in-bounds partner in some product."""
    ext = op.extents
    total = 1
    for group in _groups(op):
        axes = [a for a, index in enumerate(t.access) if index.dims & set(group)]
        # Bounds checks of both inputs on this group's axes; other axes depend on other groups.
        checks = [(u, a) for u in op.inputs for a, index in enumerate(u.access) if index.dims & set(group)]
        if not checks:
            continue
        points = math.prod(ext[d] for d in group)
        if points > ENUMERATE_MAX:
            continue  # counts 1: a weak but safe bound (a single dim, up to MAX_EXTENT, never gets here)
        grids = np.meshgrid(*(np.arange(ext[d]) for d in group), indexing="ij", sparse=True)
        coords = dict(zip(group, grids))
        inside = np.ones([ext[d] for d in group], bool)
        for u, a in checks:
            value = u.access[a].evaluate(coords)
            inside &= (value >= 0) & (value < u.shape[a])
        if not inside.any():
            return 0  # no product of this group stays in bounds: nothing is read at all
        if not axes:
            continue
        keys = np.zeros(inside.shape, np.int64)
        for a in axes:  # mixed radix over t's in-bounds axis values
            keys = keys * t.shape[a] + np.broadcast_to(t.access[a].evaluate(coords), inside.shape)
        total *= int(np.unique(keys[inside]).size)
    return total

