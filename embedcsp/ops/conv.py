"""conv2d with groups, dilation and asymmetric padding, as ONNX's Conv has them.

    out[n,g,k,p,q] += data[n,g,c, sh*p + dh*r - top, sw*q + dw*s - left] * weight[g,k,c,r,s]

With groups, tensors are the grouped views of the usual layouts, the same bytes in the same order:
data [N, G, C/G, H, W] is NCHW, weight [G, K/G, C/G, R, S] is KCRS (with C/G input
channels per filter), out [N, G, K/G, P, Q] is NKPQ; reshape to see the familiar shapes.
Every index is then one dim or one window expression, so the output lanes, the group
and the channels are each the solver's to place. Depthwise is groups = C = K.
Reads beyond the bottom or right border are zero, like those before the top or left.
"""

from __future__ import annotations

from embedcsp.einsum import einsum
from embedcsp.errors import BadInput
from embedcsp.operator import Operator, check_sizes, conv2d


def conv2d_general(n: int, c: int, h: int, w: int, k: int, r: int, s: int, *, groups: int = 1,
                   stride: tuple[int, int] = (1, 1), dilation: tuple[int, int] = (1, 1),
                   pads: tuple[int, int, int, int] = (0, 0, 0, 0)) -> Operator:
    """The conv; `pads` = (top, bottom, left, right). Without groups, dilation or asymmetric
    padding it is exactly `operator.conv2d` (the named kind, its fast ground truth and VTA's
    direct form)."""
    (sh, sw), (dh, dw), (top, bottom, left, right) = stride, dilation, pads
    check_sizes("conv2d", N=n, C=c, H=h, W=w, K=k, R=r, S=s, groups=groups, stride_h=sh, stride_w=sw,
                dilation_h=dh, dilation_w=dw)
    if groups == 1 and (dh, dw) == (1, 1) and top == bottom and left == right:
        return conv2d(n, c, h, w, k, r, s, top, left, sh, sw)  # which checks pads as pad_h, pad_w
    for name, pad in zip(("pad_top", "pad_bottom", "pad_left", "pad_right"), pads):
        if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
            raise BadInput(f"conv2d: {name} must be a whole number >= 0, got {pad!r}")
    if c % groups or k % groups:
        raise BadInput(f"conv2d: {groups} groups must divide both C={c} and K={k}")
    span_h, span_w = dh * (r - 1) + 1, dw * (s - 1) + 1
    if span_h > h + top + bottom or span_w > w + left + right:
        raise BadInput(f"conv2d: the {r}x{s} filter dilated to {span_h}x{span_w} is larger than the "
                       f"padded {h + top + bottom}x{w + left + right} input")
    p = (h + top + bottom - span_h) // sh + 1
    q = (w + left + right - span_w) // sw + 1
    cg, kg = c // groups, k // groups
    row = f"{sh}*p+{dh}*r-{top}"
    col = f"{sw}*q+{dw}*s-{left}"
    if groups == 1:  # no group dim at all: one of extent 1 would index all three tensors
        return einsum(f"out[n,k,p,q] += data[n,c,{row},{col}] * weight[k,c,r,s]",
                      {"n": n, "k": k, "p": p, "q": q, "c": c, "r": r, "s": s}, {"data": (n, c, h, w)})
    return einsum(f"out[n,g,k,p,q] += data[n,g,c,{row},{col}] * weight[g,k,c,r,s]",
                  {"n": n, "g": groups, "k": kg, "p": p, "q": q, "c": cg, "r": r, "s": s},
                  {"data": (n, groups, cg, h, w)})
