"""The embedded operator as a blocked product of instruction tiles (docs/tile.md section 10).

The embedding turns the operator into one array of tiles per pattern operand, with one axis
per lane class the operand moves along (`layout.operand_axes`: "bat", "row", "col", "red").
An instruction instance is one index along every class; it reads the first input's tile at
its (bat, row, red) indices, the second's at (bat, col, red), and accumulates into the
output's tile at (bat, row, col).

`layout.element_map` gives each operand's lanes class-major (the lanes of a class flattened
in the pattern's dim order). A tile in DRAM and in a slot is in the operand's own dim order
(`TileConfig.tile_shape`), so `packed_index` reshapes each class's lanes into its dims and
transposes them into the statement's order. A class with no pattern dim has one lane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from embedcsp.embedding import Embedding
from embedcsp.layout import element_map, operand_axes
from embedcsp.pattern import Pattern

CLASSES = ("bat", "row", "col", "red")


def dim_class(pattern: Pattern, dim: str) -> str:
    """The lane class of a pattern dim, from the operands it indexes."""
    out = dim in pattern.output.dims
    a, b = (dim in o.dims for o in pattern.inputs)
    if out and a and b:
        return "bat"
    if out and a:
        return "row"
    if out and b:
        return "col"
    return "red"


def class_dims(pattern: Pattern, cls: str) -> tuple[str, ...]:
    """The pattern dims of one class, in the pattern's dim order (how its lanes are flattened)."""
    return tuple(d for d in pattern.dim_names if dim_class(pattern, d) == cls)


def lane_order(pattern: Pattern, operand: str, axes: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(shape, perm): class-major lanes reshaped to `shape` then transposed by `perm` are the
    operand's tile in its own dim order."""
    ext = pattern.extents
    dims = [d for c in axes for d in class_dims(pattern, c)]
    own = pattern.operand(operand).dims
    if sorted(dims) != sorted(own):
        raise ValueError(f"operand {operand} has dims {own}, but its classes {axes} give {dims}")
    return tuple(ext[d] for d in dims), tuple(dims.index(d) for d in own)


@dataclass(frozen=True, eq=False)
class Blocked:
    """Instance counts per class, each operand's axes and its packed element map."""

    embedding: Embedding
    classes: tuple[str, ...]  # classes of the instance space, in CLASSES order
    counts: tuple[tuple[str, int], ...]  # instances along each class
    axes: tuple[tuple[str, tuple[str, ...]], ...]  # pattern operand -> its classes, outer first

    @property
    def pattern(self) -> Pattern:
        return self.embedding.accelerator.pattern

    @property
    def cfg(self):
        return self.embedding.accelerator.config

    def count(self, cls: str) -> int:
        return dict(self.counts).get(cls, 1)

    def axes_of(self, operand: str) -> tuple[str, ...]:
        return dict(self.axes)[operand]

    def grid(self, operand: str) -> tuple[int, ...]:
        """Tiles of the operand along each of its axes."""
        return tuple(self.count(c) for c in self.axes_of(operand))

    def tiles(self, operand: str) -> int:
        return math.prod(self.grid(operand))

    @property
    def instances(self) -> int:
        return math.prod(n for _, n in self.counts)

    @cached_property
    def class_maps(self) -> dict[str, np.ndarray]:
        """layout.element_map of every operand: [n per axis..., lanes per axis...], class-major."""
        return {o.name: element_map(self.embedding, o.name) for o in self.pattern.operands}

    def packed_index(self, operand: str) -> np.ndarray:
        """int32 [tiles..., *tile_shape]: the tensor element each lane holds (-1: zero), the
        lanes in the operand's statement dim order."""
        emap = self.class_maps[operand]
        grid = self.grid(operand)
        shape, perm = lane_order(self.pattern, operand, self.axes_of(operand))
        k = len(grid)
        lanes = emap.reshape(*grid, *shape)
        return np.ascontiguousarray(lanes.transpose(*range(k), *(k + p for p in perm)))


def blocked(emb: Embedding) -> Blocked:
    """The blocked product of an embedding."""
    pattern = emb.accelerator.pattern
    axes = tuple((o.name, tuple(operand_axes(emb, o.name))) for o in pattern.operands)
    present = {c for _, a in axes for c in a}
    classes = tuple(c for c in CLASSES if c in present)
    counts = tuple((c, emb.axis_length(c)) for c in classes)
    ext = pattern.extents
    for c in classes:
        lanes = math.prod(ext[d] for d in class_dims(pattern, c))
        given = emb.class_lanes(c) if hasattr(emb, "class_lanes") else emb.group(c).lanes
        if given != lanes:
            raise ValueError(f"the embedding gives class {c} {given} lanes, the pattern {lanes}")
    return Blocked(emb, classes, counts, axes)
