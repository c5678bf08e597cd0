"""The block-diagonal placement of a grouped operator (docs/placements.md).

A group dim g indexes all three tensors, so as a whole dim it can only be a loop: a
grouped conv with 4 channels per group then keeps 4 of 16 lanes busy on each side. Said
again over groups in blocks of f,

    g = f*g_blk + g_out  on the output side,   g = f*g_blk + g_in  on the input side,

    out[.., g, g_out, ..] += x[.., g, g_in, ..] * w[.., g, g_out, .., g_in - g_out]

(g now counts the blocks, each tensor's group axis seen as [G/f, f], the same bytes in the
same order), the second input gains an axis of extent 1 indexed by g_in - g_out, which is
outside it, so reads zero, off the diagonal. Then g_out fuses with the output channels and
g_in with the input channels on the lanes: f groups share one instruction through a
block-diagonal weight tile built on the host (f times the weight bytes), and the data
keeps its natural channel order, so a family's direct form can read it unduplicated.
f is the largest divisor of G whose blocks fit the instruction's lanes on both sides.
"""

from __future__ import annotations

import math

from embedcsp.accelerator import Accelerator
from embedcsp.operator import AffineIndex, Dim, Operator, Tensor
from embedcsp.placements import Placement, fresh_name, restate


def _plain_axis(t: Tensor, d: str) -> int | None:
    """The one axis of `t` indexed by exactly `d` (coefficient 1, no offset) when `d` indexes no
    other axis of `t`; else None."""
    axes = [k for k, ix in enumerate(t.access) if d in ix.dims]
    if len(axes) == 1:
        ix = t.access[axes[0]]
        if [(e, c) for e, c in ix.terms if c] == [(d, 1)] and ix.const == 0:
            return axes[0]
    return None


def _plain_dims(t: Tensor) -> set[str]:
    return {ix.terms[0][0] for ix in t.access if len(ix.dims) == 1 and ix.const == 0
            and [c for _, c in ix.terms if c] == [1]}


def block_diagonal(op: Operator, acc: Accelerator) -> list[Placement]:
    """For each group dim of `op` and each input that can take the block-diagonal tile."""
    lanes, role_of = acc.pattern.extents, acc.role_of
    red = max((e for p, e in lanes.items() if role_of[p] == "red"), default=1)
    side = max((e for p, e in lanes.items() if role_of[p] != "red"), default=1)
    ext = op.extents
    out = []
    for g in ext:
        G = ext[g]
        if G < 2 or any(_plain_axis(t, g) is None for t in op.tensors):
            continue
        for w in op.inputs:
            x = next(t for t in op.inputs if t is not w)
            shared_in = math.prod(ext[d] for d in (_plain_dims(x) & _plain_dims(w)) - {g})
            shared_out = math.prod(ext[d] for d in (_plain_dims(op.output) & _plain_dims(w)) - {g})
            f = max((f for f in range(2, G + 1) if G % f == 0 and f * shared_in <= red
                     and f * shared_out <= side), default=1)
            if f > 1:
                out.append(_rewrite(op, g, w.name, f))
    return out


def _rewrite(op: Operator, g: str, w_name: str, f: int) -> Placement:
    ext = op.extents
    taken = set(ext)
    g_out, g_in = fresh_name(f"{g}_out", taken), fresh_name(f"{g}_in", taken)
    dims = []
    for d in op.dims:
        dims.append(Dim(d.name, d.extent // f) if d.name == g else d)
        if d.name == g:
            dims += [Dim(g_out, f), Dim(g_in, f)]

    def remap(t: Tensor) -> Tensor:
        axis = _plain_axis(t, g)
        lane = g_in if t.role == "input" and t.name != w_name else g_out
        shape = t.shape[:axis] + (t.shape[axis] // f, f) + t.shape[axis + 1:]
        access = t.access[:axis] + (AffineIndex(((g, 1),)), AffineIndex(((lane, 1),))) + t.access[axis + 1:]
        if t.name == w_name:  # off the diagonal blocks the index is outside the extent-1 axis: zero
            shape, access = shape + (1,), access + (AffineIndex(((g_in, 1), (g_out, -1))),)
        return Tensor(t.name, t.role, shape, access)

    rewritten = restate(dims, [remap(t) for t in op.tensors])
    note = (f"block-diagonal: {f} of the {ext[g]} groups {g} share each instruction ({g_out} with the "
            f"output side, {g_in} with the input side); {w_name} becomes a block-diagonal tile built on "
            f"the host, {f}x its bytes, zeros off the diagonal")
    return Placement("block-diagonal", rewritten, note)
