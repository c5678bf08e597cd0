"""Gemmini's reference: the mapping of its own C library (gemmini-rocc-tests `include/gemmini.h`:
`tiled_matmul_auto`, `tiled_conv_auto`; /work/shared/gemmini.md section 11), as pins on the
embedding CSP, so the same planner, code generator and models compile it."""

from __future__ import annotations

from embedcsp.csp import Pins
from embedcsp.errors import NoEmbedding
from embedcsp.operator import Operator

BMM = "C[b,m,n] += A[b,m,k] * B[b,k,n]"  # embedcsp.ops.bmm's statement


def reference_pins(op: Operator) -> Pins:
    """The library's fixed mapping, whatever it costs.

    gemm: A [M][K] streams as the rows of the array's A operand, B [K][N] is the
    weight tile: m on the rows, n on the columns, k on the reduction lanes.
    conv2d: output pixels (n, p, q) stream as the rows of A, output channels k are
    the columns of B, input channels c fill the reduction lanes in chunks of DIM for
    each filter tap (r, s as loops), so a C = 3 layer uses 3 of DIM reduction rows.
    The library's first-layer packing (pixel repeats) is not in embedcsp's subset.
    """
    if op.kind == "gemm" or op.statement() == BMM:
        # bmm: tiled_matmul_auto once per batch element (b a loop).
        loops = (("b", "loop"),) if op.kind != "gemm" else ()
        return Pins(binding=(("a", "A"), ("b", "B")),
                    roles=(("m", "row"), ("n", "col"), ("k", "red"), *loops), form="matrix")
    if op.kind == "conv2d":
        return Pins(binding=(("a", "data"), ("b", "weight")),
                    roles=(("n", "row"), ("p", "row"), ("q", "row"), ("k", "col"), ("c", "red"),
                           ("r", "loop"), ("s", "loop")),
                    form="matrix")
    raise NoEmbedding(f"Gemmini's library has no mapping for {op.kind}")
