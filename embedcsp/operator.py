"""Affine operators: an iteration domain plus one affine access map per tensor.

An operator is the scalar dataflow the solver embeds into: every point of the
iteration domain is one multiply-accumulate `out[...] += in0[...] * in1[...]`,
int8 x int8 summed into int32 (wrapping, as VTA's accumulator does). Input
reads outside a tensor's bounds read zero, which is how conv2d padding is said.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from embedcsp.errors import BadInput

# Sizes beyond this are refused as absurd: indices would overflow VTA's 32-bit
# DRAM element addresses long before, and numpy would run out of memory.
MAX_EXTENT = 1 << 24
# The functional models hold a DRAM image and an int64 map per packed byte in memory.
MAX_DRAM_BYTES = 1 << 31


@dataclass(frozen=True)
class Dim:
    name: str
    extent: int


@dataclass(frozen=True)
class AffineIndex:
    """sum(coeff * dim) + const over the operator's dims."""

    terms: tuple[tuple[str, int], ...]
    const: int = 0

    @property
    def dims(self) -> frozenset[str]:
        return frozenset(d for d, c in self.terms if c != 0)

    def evaluate(self, coords: dict[str, np.ndarray | int]) -> np.ndarray | int:
        value: np.ndarray | int = self.const
        for dim, coeff in self.terms:
            value = value + coeff * coords[dim]
        return value

    def __str__(self) -> str:
        parts = [d if c == 1 else f"-{d}" if c == -1 else f"{c}*{d}" for d, c in self.terms if c != 0]
        if self.const or not parts:
            parts.append(str(self.const))
        return "+".join(parts).replace("+-", "-")


def idx(*terms: tuple[str, int] | str, const: int = 0) -> AffineIndex:
    """Shorthand: idx("m"), idx(("p", 2), "r", const=-1)."""
    norm = tuple((t, 1) if isinstance(t, str) else t for t in terms)
    return AffineIndex(norm, const)


@dataclass(frozen=True)
class Tensor:
    name: str
    role: str  # "input" or "output"
    shape: tuple[int, ...]
    access: tuple[AffineIndex, ...]

    @property
    def dims(self) -> frozenset[str]:
        """Operator dims this tensor's element depends on."""
        out: frozenset[str] = frozenset()
        for index in self.access:
            out |= index.dims
        return out

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Operator:
    kind: str  # "gemm" or "conv2d"
    params: tuple[tuple[str, int], ...]  # the user-facing shape, in manifest order
    dims: tuple[Dim, ...]
    tensors: tuple[Tensor, ...]  # inputs first, the single output last

    @cached_property
    def extents(self) -> dict[str, int]:
        return {d.name: d.extent for d in self.dims}

    @property
    def inputs(self) -> tuple[Tensor, ...]:
        return tuple(t for t in self.tensors if t.role == "input")

    @property
    def output(self) -> Tensor:
        return next(t for t in self.tensors if t.role == "output")

    def tensor(self, name: str) -> Tensor:
        return next(t for t in self.tensors if t.name == name)

    @property
    def macs(self) -> int:
        """Iteration points, i.e. the useful multiply-accumulates."""
        return math.prod(d.extent for d in self.dims)

    @property
    def param_dict(self) -> dict[str, int]:
        return dict(self.params)

    def describe(self) -> str:
        shape = " ".join(f"{k}={v}" for k, v in self.params)
        if self.kind == "einsum":  # its parameters are the dims: the statement says what they mean
            return f"einsum '{self.statement()}' {shape}"
        return f"{self.kind} {shape}"

    def statement(self) -> str:
        """The operator as one statement, `out[...] += a[...] * b[...]` (embedcsp/einsum.py reads it)."""
        def term(t: Tensor) -> str:
            return f"{t.name}[{','.join(str(ix) for ix in t.access)}]"
        a, b = self.inputs
        return f"{term(self.output)} += {term(a)} * {term(b)}"


def check_sizes(kind: str, **sizes: int) -> None:
    """BadInput unless every size is a whole number within 1..MAX_EXTENT."""
    for name, value in sizes.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise BadInput(f"{kind}: {name} must be a whole number, got {value!r}")
        if value < 1:
            raise BadInput(f"{kind}: {name} must be at least 1, got {value}")
        if value > MAX_EXTENT:
            raise BadInput(f"{kind}: {name}={value} is beyond the supported {MAX_EXTENT}")


def gemm(m: int, n: int, k: int) -> Operator:
    """DeepBench GEMM: C[M,N] = A[M,K] @ B[K,N]."""
    check_sizes("gemm", M=m, N=n, K=k)
    return Operator(
        kind="gemm",
        params=(("M", m), ("N", n), ("K", k)),
        dims=(Dim("m", m), Dim("n", n), Dim("k", k)),
        tensors=(
            Tensor("A", "input", (m, k), (idx("m"), idx("k"))),
            Tensor("B", "input", (k, n), (idx("k"), idx("n"))),
            Tensor("C", "output", (m, n), (idx("m"), idx("n"))),
        ),
    )


def conv2d(
    n: int, c: int, h: int, w: int, k: int, r: int, s: int,
    pad_h: int = 0, pad_w: int = 0, stride_h: int = 1, stride_w: int = 1,
) -> Operator:
    """out[n,k,p,q] += data[n,c,p*sh+r-ph,q*sw+s-pw] * weight[k,c,r,s], zero padding."""
    check_sizes("conv2d", N=n, C=c, H=h, W=w, K=k, R=r, S=s, stride_h=stride_h, stride_w=stride_w)
    for name, pad in (("pad_h", pad_h), ("pad_w", pad_w)):
        if not isinstance(pad, (int, np.integer)) or pad < 0:
            raise BadInput(f"conv2d: {name} must be a whole number >= 0, got {pad!r}")
    if r > h + 2 * pad_h or s > w + 2 * pad_w:
        raise BadInput(
            f"conv2d: the {r}x{s} filter is larger than the padded {h + 2 * pad_h}x{w + 2 * pad_w} input"
        )
    p = (h + 2 * pad_h - r) // stride_h + 1
    q = (w + 2 * pad_w - s) // stride_w + 1
    return Operator(
        kind="conv2d",
        params=(("N", n), ("C", c), ("H", h), ("W", w), ("K", k), ("R", r), ("S", s),
                ("pad_h", pad_h), ("pad_w", pad_w), ("stride_h", stride_h), ("stride_w", stride_w)),
        dims=(Dim("n", n), Dim("k", k), Dim("p", p), Dim("q", q), Dim("c", c), Dim("r", r), Dim("s", s)),
        tensors=(
            Tensor("data", "input", (n, c, h, w),
                   (idx("n"), idx("c"), idx(("p", stride_h), "r", const=-pad_h),
                    idx(("q", stride_w), "s", const=-pad_w))),
            Tensor("weight", "input", (k, c, r, s), (idx("k"), idx("c"), idx("r"), idx("s"))),
            Tensor("out", "output", (n, k, p, q), (idx("n"), idx("k"), idx("p"), idx("q"))),
        ),
    )


def operator_from_params(kind: str, params: dict[str, int]) -> Operator:
    """Rebuild an operator from a manifest's `operator` table."""
    if kind == "gemm":
        return gemm(params["M"], params["N"], params["K"])
    if kind == "conv2d":
        return conv2d(params["N"], params["C"], params["H"], params["W"], params["K"],
                      params["R"], params["S"], params["pad_h"], params["pad_w"],
                      params["stride_h"], params["stride_w"])
    raise BadInput(f"unknown operator kind {kind!r}: expected 'gemm' or 'conv2d'")
