"""VTA's reference: the mapping its own TVM flow gives an operator (docs/vta.md section 8),
as pins on the embedding CSP so the same planner and models compile it."""

from __future__ import annotations

from embedcsp.csp import Pins
from embedcsp.errors import NoEmbedding
from embedcsp.operator import Operator
from embedcsp.targets.vta.direct import direct_unsupported

BMM = "C[b,m,n] += A[b,m,k] * B[b,k,n]"  # embedcsp.ops.bmm's statement


def reference_pins(op: Operator) -> Pins:
    """VTA's fixed TVM strategy (docs/vta.md section 8), whatever it costs.

    gemm: rows = N, BLOCK_OUT = M, BLOCK_IN = K, packed matrices.
    conv2d: NCHW1n16c data and OIHW16o16i weights read in place, one GEMM
    micro-op per filter tap: BATCH = n, BLOCK_OUT = k, BLOCK_IN = c, the direct form.
    A grouped or depthwise conv: that conv once per group (g a loop), each group's
    channels padded to the lanes on their own, as a TVM user writes it.
    Sizes that are not multiples of the lanes are padded, as a TVM user must.
    """
    if op.kind == "gemm" or op.statement() == BMM:
        # bmm: the dense mapping once per batch element (b a loop), our choice where TVM has none.
        loops = (("b", "loop"),) if op.kind != "gemm" else ()
        return Pins(binding=(("inp", "B"), ("wgt", "A")),
                    roles=(("n", "row"), ("m", "col"), ("k", "red"), *loops), form="matrix")
    reason = direct_unsupported(op)
    if reason is not None:
        raise NoEmbedding(f"the reference strategy reads conv2d data in place, but here {reason}")
    groups = (("g", "loop"),) if "g" in op.extents else ()
    return Pins(binding=(("inp", "data"), ("wgt", "weight")),
                roles=(("n", "row"), ("k", "col"), ("c", "red"), *groups,
                       ("p", "loop"), ("q", "loop"), ("r", "loop"), ("s", "loop")),
                form="direct")
