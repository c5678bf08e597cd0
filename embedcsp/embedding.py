"""An embedding: how the instruction's lanes sit on the operator's dims.

Each pattern lane dim (VTA: b rows, o output lanes, i reduction lanes) takes a
group of operator dims, fused outer-to-inner and cut into chunks of the lane
extent; the last chunk may be partly padding. Every other operator dim is a
translation of the instruction: a `row`, `col` or `red` loop, named after the
pattern dim class it moves along. This is the closed form of the scalar
embedding the CSP reasons about; `check_scalar` expands it back to scalar
multiply nodes and checks the dataflow, so the two cannot disagree silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from embedcsp.accelerator import Accelerator
from embedcsp.operator import Operator


@dataclass(frozen=True)
class LaneGroup:
    """Operator dims fused onto one pattern lane dim."""

    role: str  # "row", "col" or "red"
    lanes: int  # the lane extent (BATCH, BLOCK_OUT or BLOCK_IN)
    dims: tuple[str, ...]  # outer to inner
    extents: tuple[int, ...]

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
    role: str  # "row", "col" or "red"


@dataclass(frozen=True)
class Embedding:
    """Operand binding, lane groups and translation loops."""

    operator: Operator
    accelerator: Accelerator
    binding: tuple[tuple[str, str], ...]  # pattern operand -> operator tensor
    groups: tuple[LaneGroup, ...]  # one per role: row, col, red
    loops: tuple[Loop, ...]  # in operator dim order
    # How inp reaches the accelerator: "matrix" packs the rows x red matrix on the
    # host (im2col, duplicating overlapping windows); "direct" keeps the tensor
    # channel-blocked and lets LOAD padding and micro-op arithmetic walk the
    # filter window (see embedcsp.targets.vta.direct).
    form: str = "matrix"

    @cached_property
    def bound(self) -> dict[str, str]:
        return dict(self.binding)

    def group(self, role: str) -> LaneGroup:
        return next(g for g in self.groups if g.role == role)

    def loops_of(self, role: str) -> tuple[Loop, ...]:
        return tuple(lp for lp in self.loops if lp.role == role)

    def axis_length(self, role: str) -> int:
        """Instruction instances along one matrix axis: loop extents x lane chunks."""
        n = self.group(role).chunks
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
        dim_of = {r: d for d, r in acc.role_of.items()}
        for g in self.groups:
            if g.role not in dim_of:
                continue  # the instruction has no such lane class
            lane = labels.get(g.role, f"{dim_of[g.role]}")
            if not g.dims:
                lines.append(f"{lane} lanes ({g.lanes}): unused (1 of {g.lanes} lanes busy)")
                continue
            dims = "x".join(f"{d}[{e}]" for d, e in zip(g.dims, g.extents))
            lines.append(
                f"{lane} lanes ({g.lanes}) <- {dims}: {g.fused} in {g.chunks} chunk(s), "
                f"{g.fused / g.padded:.1%} of lanes busy"
            )
        for role, what in (("row", "rows"), ("col", "output blocks"), ("red", "reduction blocks")):
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

    def summary(self) -> dict:
        return {
            "binding": dict(self.binding),
            "lanes": {g.role: {"dims": list(g.dims), "fused": g.fused, "chunks": g.chunks,
                               "padded": g.padded} for g in self.groups},
            "loops": [{"dim": lp.dim, "extent": lp.extent, "role": lp.role} for lp in self.loops],
            "padding_efficiency": self.efficiency,
            "form": self.form,
        }


def check_scalar(emb: Embedding, instances: np.ndarray | None = None) -> None:
    """Expand instruction instances to scalar MACs and check the dataflow.

    For every instance (row, col, red position along the matrix axes) and every
    pattern node (b, o, i) that maps to a real operator point:
    nodes sharing a pattern element share the operator element, and distinct
    accumulator lanes hold distinct output elements. With `instances=None` all
    instances are expanded and each operator MAC must be covered exactly once.
    Raises AssertionError with the first violation.
    """
    op, acc = emb.operator, emb.accelerator
    axes = {r: emb.axis_length(r) for r in ("row", "col", "red")}
    if instances is None:
        grid = np.stack(np.meshgrid(*(np.arange(axes[r]) for r in ("row", "col", "red")),
                                    indexing="ij"), -1).reshape(-1, 3)
    else:
        grid = np.asarray(instances).reshape(-1, 3)
    # Sampled checks look at a bounded set of lanes per class (lane 0, the last, and spaced ones
    # between), so an 8x1024x1024-lane instruction costs megabytes, not gigabytes; the
    # sharing checks compare against lane 0, which every sample holds.
    cap = None if instances is None else MAX_SAMPLED_LANES
    lane = {r: _lanes(emb.group(r).lanes, cap) for r in ("row", "col", "red")}
    # Node coordinates: shape (instances, B, O, I) per operator dim.
    coords: dict[str, np.ndarray] = {}
    valid = np.ones((len(grid), len(lane["row"]), len(lane["col"]), len(lane["red"])), bool)
    for k, role in enumerate(("row", "col", "red")):
        c, ok = axis_coords(emb, role, grid[:, k][:, None], lane[role][None, :])
        shape = [len(grid), 1, 1, 1]
        shape[k + 1] = len(lane[role])
        for d, v in c.items():
            coords[d] = np.broadcast_to(v.reshape(shape), valid.shape)
        valid &= ok.reshape(shape)
    bound = emb.bound
    pattern = acc.pattern
    for operand in pattern.operands:
        tensor = op.tensor(bound[operand.name])
        key = np.stack([np.broadcast_to(ix.evaluate(coords), valid.shape) for ix in tensor.access], -1)
        # Nodes that differ only along a dim the operand lacks share its element.
        for dim in pattern.dim_names:
            if dim in operand.dims:
                continue
            axis = ("row", "col", "red").index(acc.role_of[dim])
            ref = np.take(key, [0], axis=axis + 1)
            both = valid & np.take(valid, [0], axis=axis + 1)
            assert np.all((key == ref).all(-1) | ~both), (
                f"nodes sharing {operand.name} map to different {tensor.name} elements")
    out = op.tensor(bound[pattern.output.name])
    flat = np.ravel_multi_index(
        tuple(np.where(valid, ix.evaluate(coords), 0) for ix in out.access), out.shape)
    per_instance = np.where(valid[..., 0], flat[..., 0], -1).reshape(len(grid), -1)
    for row in per_instance:
        real = row[row >= 0]
        assert len(np.unique(real)) == len(real), "two accumulator lanes hold one output element"
    if instances is None:
        points = np.stack([coords[d.name][valid] for d in op.dims], -1)
        uniq = np.unique(points, axis=0)
        assert len(uniq) == len(points), "an operator MAC is covered twice"
        assert len(points) == op.macs, f"the cover has {len(points)} MACs, the operator {op.macs}"


MAX_SAMPLED_LANES = 64  # per lane class, in a sampled scalar check


def _lanes(n: int, cap: int | None) -> np.ndarray:
    """All lane indices, or at most `cap` of them spread over [0, n) including both ends."""
    if cap is None or n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))


def axis_coords(emb: Embedding, role: str, index: np.ndarray, lane: np.ndarray
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Operator coordinates along one matrix axis: index = (loops..., chunk), row-major."""
    group = emb.group(role)
    chunk = index % group.chunks
    rest = index // group.chunks
    coords: dict[str, np.ndarray] = {}
    for lp in reversed(emb.loops_of(role)):
        coords[lp.dim] = rest % lp.extent
        rest = rest // lp.extent
    lane_coords, valid = group.decode(chunk, lane)
    shape = np.broadcast(chunk, lane).shape
    coords = {d: np.broadcast_to(v, shape) for d, v in coords.items()}
    coords.update({d: np.broadcast_to(v, shape) for d, v in lane_coords.items()})
    return coords, np.broadcast_to(valid, shape)


def sample_instances(emb: Embedding, seed: int, count: int = 32) -> np.ndarray:
    """The first and last instruction instance plus random ones, as (row, col, red) rows."""
    axes = np.array([emb.axis_length(r) for r in ("row", "col", "red")])
    rng = np.random.default_rng(seed)
    picks = [np.zeros(3, np.int64), axes - 1, *(rng.integers(0, axes) for _ in range(count))]
    return np.stack(picks)
