"""An embedding: how the instruction's lanes sit on the operator's dims.

Each pattern lane dim (VTA: b rows, o output lanes, i reduction lanes) takes a
group of operator dims, fused outer-to-inner and cut into chunks of the lane
extent; the last chunk may be partly padding. Every other operator dim is a
translation of the instruction: a loop along one of the lane classes
(`CLASSES`: row, col, red, bat), named after the operands it moves. This is the
closed form of the scalar embedding the CSP reasons about; `check_scalar`
expands it back to scalar multiply nodes and checks the dataflow, so the two
cannot disagree silently.

The lane classes are the matrix axes of the embedded product:
  row  indexes the output and the first input      (VTA: BATCH)
  col  indexes the output and the second input     (VTA: BLOCK_OUT)
  red  indexes both inputs, summed                  (VTA: BLOCK_IN)
  bat  indexes all three operands: independent copies side by side (a grouped
       instruction's g, a batched matmul's batch); present only where the
       instruction or the operator has such a dim.
A class may hold several pattern dims: one element along its axis is one chunk
of each, and its lanes are their lanes flattened in the pattern's dim order.
A class without a pattern dim has one lane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from embedcsp.accelerator import Accelerator
from embedcsp.operator import Operator

CLASSES = ("row", "col", "red", "bat")


@dataclass(frozen=True)
class LaneGroup:
    """Operator dims fused onto one pattern lane dim."""

    role: str  # its class: "row", "col", "red" or "bat"
    lanes: int  # the lane extent (VTA: BATCH, BLOCK_OUT or BLOCK_IN)
    dims: tuple[str, ...]  # outer to inner
    extents: tuple[int, ...]
    lane: str = ""  # the pattern dim; "" for a class the instruction lacks (one lane)

    @property
    def fused(self) -> int:
        return math.prod(self.extents)

    @property
    def chunks(self) -> int:
        return -(-self.fused // self.lanes)

    @property
    def padded(self) -> int:
        return self.chunks * self.lanes

    def decode(self, chunk: np.ndarray, lane: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Operator coordinates of (chunk, lane), and whether the lane is real."""
        flat = chunk * self.lanes + lane
        valid = flat < self.fused
        coords = {}
        rest = np.where(valid, flat, 0)
        for dim, ext in zip(reversed(self.dims), reversed(self.extents)):
            coords[dim] = rest % ext
            rest = rest // ext
        return coords, valid


@dataclass(frozen=True)
class Loop:
    dim: str
    extent: int
    role: str  # the class of the axis it moves along: "row", "col", "red" or "bat"


@dataclass(frozen=True)
class Embedding:
    """Operand binding, lane groups and translation loops."""

    operator: Operator
    accelerator: Accelerator
    binding: tuple[tuple[str, str], ...]  # pattern operand -> operator tensor
    # One per pattern dim, by class (CLASSES order) then pattern order; a class the
    # instruction lacks has one group of one lane (lane "").
    groups: tuple[LaneGroup, ...]
    loops: tuple[Loop, ...]  # in operator dim order
    # How the first input reaches the accelerator: "matrix" packs its rows x red matrix on
    # the host (im2col, duplicating overlapping windows); other forms are the family's
    # (VTA's "direct" keeps the tensor channel-blocked, embedcsp.targets.vta.direct).
    form: str = "matrix"

    @cached_property
    def bound(self) -> dict[str, str]:
        return dict(self.binding)

    @cached_property
    def classes(self) -> tuple[str, ...]:
        """The lane classes (matrix axes) present: row, col, red, and bat where there is one."""
        return tuple(c for c in CLASSES if any(g.role == c for g in self.groups))

    def groups_of(self, role: str) -> tuple[LaneGroup, ...]:
        return tuple(g for g in self.groups if g.role == role)

    def group(self, role: str) -> LaneGroup:
        """The one group of a class (VTA's code asks this; a class of several dims has no one)."""
        (group,) = self.groups_of(role)
        return group

    def class_lanes(self, role: str) -> int:
        """Lanes of one element along a class axis: the product of its pattern dims' extents."""
        return math.prod(g.lanes for g in self.groups_of(role))

    def loops_of(self, role: str) -> tuple[Loop, ...]:
        return tuple(lp for lp in self.loops if lp.role == role)

    def axis_length(self, role: str) -> int:
        """Instruction instances along one matrix axis: loop extents x lane chunks."""
        n = math.prod(g.chunks for g in self.groups_of(role))
        for lp in self.loops_of(role):
            n *= lp.extent
        return n

    @property
    def padded_macs(self) -> int:
        """MACs the hardware issues, padding lanes included."""
        total = 1
        for g in self.groups:
            total *= g.padded
        for lp in self.loops:
            total *= lp.extent
        return total

    @property
    def efficiency(self) -> float:
        return self.operator.macs / self.padded_macs

    def describe(self) -> list[str]:
        """The embedding in the user's terms, one line per lane dim and loop class."""
        lines = []
        acc = self.accelerator
        # The family's names for the lane classes where it has them (VTA: BATCH, BLOCK_OUT,
        # BLOCK_IN), else the instruction's own dim names.
        labels = acc.config.lane_labels() if hasattr(acc.config, "lane_labels") else {}
        for g in self.groups:
            if not g.lane:
                continue  # the instruction has no such lane class
            own = [x for x in self.groups_of(g.role) if x.lane]
            lane = labels.get(g.role, g.lane) if len(own) == 1 else g.lane
            if not g.dims:
                lines.append(f"{lane} lanes ({g.lanes}): unused (1 of {g.lanes} lanes busy)")
                continue
            dims = "x".join(f"{d}[{e}]" for d, e in zip(g.dims, g.extents))
            lines.append(
                f"{lane} lanes ({g.lanes}) <- {dims}: {g.fused} in {g.chunks} chunk(s), "
                f"{g.fused / g.padded:.1%} of lanes busy"
            )
        for role, what in (("row", "rows"), ("col", "output blocks"), ("red", "reduction blocks"),
                           ("bat", "batches")):
            loops = [lp for lp in self.loops_of(role) if lp.extent > 1]  # extent 1 is no loop
            if loops:
                dims = ", ".join(f"{lp.dim}[{lp.extent}]" for lp in loops)
                lines.append(f"{what} iterate over {dims}")
        lines.append("operands: " + ", ".join(f"{p} <- {t}" for p, t in self.binding))
        first = acc.pattern.inputs[0].name
        if self.form == "direct":
            lines.append(f"layout: {self.bound[first]} stays channel-blocked in DRAM; LOAD pads the borders "
                         "and micro-ops walk the filter taps (no im2col)")
        else:
            lines.append(f"layout: the host packs {first} as a rows x reduction matrix"
                         + (" (im2col)" if self.operator.kind == "conv2d" else ""))
        return lines

    def brief(self) -> str:
        """One line: form, binding, dims per lane, loops (`inp<-B wgt<-A | o<-m i<-k | loops n`)."""
        binding = " ".join(f"{q}<-{t}" for q, t in self.binding[:-1])
        lanes = " ".join(f"{g.lane}<-{'*'.join(g.dims)}" for g in self.groups if g.dims and g.lane)
        loops = " ".join(lp.dim for lp in self.loops)
        return f"{self.form}: {binding} | {lanes or 'no lanes'} | loops {loops or 'none'}"

    def summary(self) -> dict:
        return {
            "binding": dict(self.binding),
            # Keyed by class; by class:lane where a class holds several pattern dims.
            "lanes": {(g.role if len(self.groups_of(g.role)) == 1 else f"{g.role}:{g.lane}"):
                      {"lane": g.lane, "dims": list(g.dims), "fused": g.fused, "chunks": g.chunks,
                       "padded": g.padded} for g in self.groups},
            "loops": [{"dim": lp.dim, "extent": lp.extent, "role": lp.role} for lp in self.loops],
            "padding_efficiency": self.efficiency,
            "form": self.form,
        }


def check_scalar(emb: Embedding, instances: np.ndarray | None = None) -> None:
    """Expand instruction instances to scalar MACs and check the dataflow.

    For every instance (its position along each matrix axis, `emb.classes` order) and every
    pattern node (one lane of every group) that maps to a real operator point:
    nodes sharing a pattern element share the operator element, and distinct
    accumulator lanes hold distinct output elements. With `instances=None` all
    instances are expanded and each operator MAC must be covered exactly once.
    Raises AssertionError with the first violation.
    """
    op, acc = emb.operator, emb.accelerator
    classes = emb.classes
    if instances is None:
        grid = np.stack(np.meshgrid(*(np.arange(emb.axis_length(c)) for c in classes),
                                    indexing="ij"), -1).reshape(-1, len(classes))
    else:
        grid = np.asarray(instances).reshape(-1, len(classes))
    # Sampled checks look at a bounded set of lanes per group (lane 0, the last, and spaced
    # ones between), so an 8x1024x1024-lane instruction costs megabytes, not gigabytes; the
    # sharing checks compare against lane 0, which every sample holds.
    groups = emb.groups
    wide = sum(g.lanes > 2 for g in groups)
    cap = None if instances is None else max(2, min(MAX_SAMPLED_LANES, int((1 << 18) ** (1 / max(1, wide)))))
    lanes = [_lanes(g.lanes, cap) for g in groups]
    shape = (len(grid), *(len(x) for x in lanes))
    # Node coordinates: shape (instances, one axis per group) per operator dim.
    coords: dict[str, np.ndarray] = {}
    valid = np.ones(shape, bool)
    for k, role in enumerate(classes):
        index = grid[:, k]
        mine = [j for j, g in enumerate(groups) if g.role == role]
        chunk_counts = [groups[j].chunks for j in mine]
        # The axis index is (loops..., chunk of each group), row-major.
        rest = index
        chunks = {}
        for j, n in zip(reversed(mine), reversed(chunk_counts)):
            chunks[j] = rest % n
            rest = rest // n
        for lp in reversed(emb.loops_of(role)):
            coords[lp.dim] = (rest % lp.extent).reshape((-1,) + (1,) * len(groups))
            rest = rest // lp.extent
        for j in mine:
            c, ok = groups[j].decode(chunks[j][:, None], lanes[j][None, :])
            for d, v in c.items():
                coords[d] = _along2(v, j + 1, shape)
            valid &= _along2(ok, j + 1, shape)
    coords = {d: np.broadcast_to(v, shape) for d, v in coords.items()}
    bound = emb.bound
    pattern = acc.pattern
    axis_of = {g.lane: j + 1 for j, g in enumerate(groups) if g.lane}
    for operand in pattern.operands:
        tensor = op.tensor(bound[operand.name])
        key = np.stack([np.broadcast_to(ix.evaluate(coords), shape) for ix in tensor.access], -1)
        # Nodes that differ only along a dim the operand lacks share its element.
        for dim in pattern.dim_names:
            if dim in operand.dims:
                continue
            axis = axis_of[dim]
            ref = np.take(key, [0], axis=axis)
            both = valid & np.take(valid, [0], axis=axis)
            assert np.all((key == ref).all(-1) | ~both), (
                f"nodes sharing {operand.name} map to different {tensor.name} elements")
    out = op.tensor(bound[pattern.output.name])
    # A point whose output index falls outside the output writes nowhere (a placement's
    # padding, placements/banded.py); it holds no output element.
    index = [np.broadcast_to(ix.evaluate(coords), shape) for ix in out.access]
    writes = valid
    for ix, extent in zip(index, out.shape):
        writes = writes & (ix >= 0) & (ix < extent)
    flat = np.ravel_multi_index(tuple(np.where(writes, ix, 0) for ix in index), out.shape)
    # One node per output lane: the first lane of every reduction group.
    first = tuple(slice(None) if g.role != "red" else slice(0, 1) for g in groups)
    per_instance = np.where(writes[(slice(None), *first)], flat[(slice(None), *first)], -1).reshape(len(grid), -1)
    for row in per_instance:
        real = row[row >= 0]
        assert len(np.unique(real)) == len(real), "two accumulator lanes hold one output element"
    if instances is None:
        points = np.stack([coords[d.name][valid] for d in op.dims], -1)
        uniq = np.unique(points, axis=0)
        assert len(uniq) == len(points), "an operator MAC is covered twice"
        assert len(points) == op.macs, f"the cover has {len(points)} MACs, the operator {op.macs}"


def _along2(v: np.ndarray, axis: int, shape: tuple[int, ...]) -> np.ndarray:
    """An (instances, lanes) array placed on axes 0 and `axis` of `shape` (broadcastable)."""
    dims = [1] * len(shape)
    dims[0], dims[axis] = v.shape
    return v.reshape(dims)


MAX_SAMPLED_LANES = 64  # per lane class, in a sampled scalar check


def _lanes(n: int, cap: int | None) -> np.ndarray:
    """All lane indices, or at most `cap` of them spread over [0, n) including both ends."""
    if cap is None or n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))


def axis_coords(emb: Embedding, role: str, index: np.ndarray, lane: np.ndarray
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Operator coordinates along one matrix axis.

    index = (loops..., chunk of each group of the class), row-major; lane = the lanes of
    the class's groups flattened row-major (0 .. class_lanes - 1).
    """
    groups = emb.groups_of(role)
    rest = index
    chunk = {}
    for g in reversed(groups):
        chunk[g.lane] = rest % g.chunks
        rest = rest // g.chunks
    coords: dict[str, np.ndarray] = {}
    for lp in reversed(emb.loops_of(role)):
        coords[lp.dim] = rest % lp.extent
        rest = rest // lp.extent
    shape = np.broadcast(index, lane).shape
    valid = np.ones(shape, bool)
    lane_rest = lane
    for g in reversed(groups):
        lane_coords, ok = g.decode(chunk[g.lane], lane_rest % g.lanes)
        lane_rest = lane_rest // g.lanes
        coords.update(lane_coords)
        valid = valid & ok
    coords = {d: np.broadcast_to(v, shape) for d, v in coords.items()}
    return coords, np.broadcast_to(valid, shape)


def sample_instances(emb: Embedding, seed: int, count: int = 32) -> np.ndarray:
    """The first and last instruction instance plus random ones, as rows of axis positions
    (`emb.classes` order)."""
    axes = np.array([emb.axis_length(r) for r in emb.classes])
    rng = np.random.default_rng(seed)
    picks = [np.zeros(len(axes), np.int64), axes - 1, *(rng.integers(0, axes) for _ in range(count))]
    return np.stack(picks)
