"""The banded (Toeplitz) placement of a sliding window (docs/placements.md).

A window read `x[a*q + s + c] * w[s]` (output column q, stride a, filter tap s) is
said again over output columns in tiles of B:

    q = B*q_tile + q_out            (q_out < B)
    q_in = a*q_out + s              (q_in < L = a*(B-1) + S: the tile's input columns)

    out[.., B*q_tile + q_out] += x[.., a*B*q_tile + q_in + c] * w[.., q_in - a*q_out]

The filter index q_in - a*q_out is outside the filter (reads zero) except on a band, so
the second operand of the instruction is a banded tile of the filter, built on the host,
and the first is L consecutive input columns read once: one input element serves up to
S outputs through different taps, with no im2col duplication. Points with
B*q_tile + q_out >= Q write outside the output and are dropped. B is chosen so that L
fills one reduction lane class of the instruction (L <= its extent).
"""

from __future__ import annotations

from embedcsp.accelerator import Accelerator
from embedcsp.operator import AffineIndex, Dim, Operator, Tensor
from embedcsp.placements import Placement, fresh_name, restate


def _window(op: Operator) -> list[tuple[str, str, str, int, int]]:
    """(q, s, data tensor, axis of data, stride a) for each output column q that a tensor
    reads through a unit-dilation window a*q + s + c with s a tap of the other input."""
    out = op.output
    found = []
    plain_out = {ix.terms[0][0] for ix in out.access if len(ix.terms) == 1 and ix.terms[0][1] == 1 and ix.const == 0}
    for x in op.inputs:
        w = next(t for t in op.inputs if t is not x)
        for axis, ix in enumerate(x.access):
            terms = {d: c for d, c in ix.terms if c}
            if len(terms) != 2:
                continue
            for q, s in (tuple(terms), tuple(reversed(tuple(terms)))):
                if q not in plain_out or terms[s] != 1 or terms[q] < 1 or s in out.dims or q in w.dims:
                    continue
                # q and s appear in no other axis of x; s is exactly one axis of w.
                if any(q in o.dims or s in o.dims for k, o in enumerate(x.access) if k != axis):
                    continue
                taps = [k for k, o in enumerate(w.access) if s in o.dims]
                if len(taps) != 1 or {d: c for d, c in w.access[taps[0]].terms if c} != {s: 1} \
                        or w.access[taps[0]].const != 0:
                    continue
                found.append((q, s, x.name, axis, terms[q]))
    return found


def banded(op: Operator, acc: Accelerator) -> list[Placement]:
    """The banded placement of each window of `op`, for each reduction lane width of the
    instruction that holds a band of at least two output columns."""
    lanes = acc.pattern.extents
    widths = sorted({lanes[p] for p, r in acc.role_of.items() if r == "red"})
    ext = op.extents
    out = []
    for q, s, x_name, axis, a in _window(op):
        Q, S = ext[q], ext[s]
        # The widest band whose input columns fit a reduction lane class, and the bands that
        # exactly fill a narrower lane class the output columns may go to (mma 16x8x16: 8).
        widest = {min((w - S) // a + 1, Q) for w in widths if w >= S}
        top = max(widest, default=0)
        narrower = {min(e, Q) for p, e in lanes.items() if acc.role_of[p] != "red" and e < top
                    and a * (e - 1) + S <= widths[-1]}
        for band in sorted(widest | narrower, reverse=True):
            if band >= 2:
                out.append(_rewrite(op, q, s, x_name, axis, a, band))
    return out


def _rewrite(op: Operator, q: str, s: str, x_name: str, axis: int, a: int, band: int) -> Placement:
    ext = op.extents
    Q, S = ext[q], ext[s]
    span = a * (band - 1) + S
    taken = set(ext)
    tile, lane, window = (fresh_name(f"{q}_{part}", taken) for part in ("tile", "out", "in"))
    dims = []
    for d in op.dims:
        if d.name == q:
            dims += [Dim(tile, -(-Q // band)), Dim(lane, band)]
        elif d.name == s:
            dims.append(Dim(window, span))
        else:
            dims.append(d)

    def remap(t: Tensor) -> Tensor:
        access = []
        for k, ix in enumerate(t.access):
            terms = dict((d, c) for d, c in ix.terms if c)
            if t.role == "output" and q in terms:
                ix = AffineIndex(((tile, band), (lane, 1)), ix.const)
            elif t.name == x_name and k == axis:
                rest = tuple((d, c) for d, c in ix.terms if d not in (q, s) and c)
                ix = AffineIndex(((tile, a * band), (window, 1), *rest), ix.const)
            elif s in terms:  # the filter tap, read along the band
                ix = AffineIndex(((window, 1), (lane, -a)), ix.const)
            access.append(ix)
        return Tensor(t.name, t.role, t.shape, tuple(access))

    rewritten = restate(dims, [remap(t) for t in op.tensors])
    note = (f"banded: output columns {q} in tiles of {band} ({tile} x {lane}) against the {span} input "
            f"columns they read ({window}); the filter taps {s} become a banded {band}x{span} tile built "
            f"on the host, each input element read once per tile")
    return Placement("banded", rewritten, note)
