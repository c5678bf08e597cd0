"""Batched matmul: C[b,m,n] += A[b,m,k] * B[b,k,n] (attention's QK^T and AV per head)."""

from __future__ import annotations

from embedcsp.einsum import einsum
from embedcsp.operator import Operator, check_sizes


def bmm(b: int, m: int, n: int, k: int) -> Operator:
    """B independent GEMMs: A [B, M, K] and B [B, K, N] (inputs), C [B, M, N] (output)."""
    check_sizes("bmm", B=b, M=m, N=n, K=k)
    return einsum("C[b,m,n] += A[b,m,k] * B[b,k,n]", {"b": b, "m": m, "n": n, "k": k})
