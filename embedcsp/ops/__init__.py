"""Named operators beyond gemm and conv2d (operator.py), each a thin constructor over a
statement (embedcsp/einsum.py): one operator, one file (docs/operators.md)."""

from embedcsp.ops.bmm import bmm
from embedcsp.ops.conv import conv2d_general

__all__ = ["bmm", "conv2d_general"]
