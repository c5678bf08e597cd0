"""An instruction's semantics as a tiny einsum: the one definition that both
the embedding CSP and the functional model read.

    acc[b,o] += inp[b,i] * wgt[o,i]     with b < BATCH, o < BLOCK_OUT, i < BLOCK_IN
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass

import numpy as np

from embedcsp.errors import IsaError

_STATEMENT = re.compile(
    r"^\s*(\w+)\s*\[([\w\s,]*)\]\s*\+=\s*(\w+)\s*\[([\w\s,]*)\]\s*\*\s*(\w+)\s*\[([\w\s,]*)\]\s*$"
)


@dataclass(frozen=True)
class Operand:
    name: str
    dims: tuple[str, ...]


@dataclass(frozen=True)
class Pattern:
    """`output[...] += inputs[0][...] * inputs[1][...]` with lane extents."""

    output: Operand
    inputs: tuple[Operand, Operand]
    lanes: tuple[tuple[str, int], ...]  # (dim, extent) in statement order

    @property
    def extents(self) -> dict[str, int]:
        return dict(self.lanes)

    @property
    def dim_names(self) -> tuple[str, ...]:
        return tuple(d for d, _ in self.lanes)

    @property
    def operands(self) -> tuple[Operand, ...]:
        return (*self.inputs, self.output)

    def operand(self, name: str) -> Operand:
        return next(o for o in self.operands if o.name == name)

    @property
    def macs(self) -> int:
        return math.prod(e for _, e in self.lanes)

    def statement(self) -> str:
        def term(o: Operand) -> str:
            return f"{o.name}[{','.join(o.dims)}]"
        return f"{term(self.output)} += {term(self.inputs[0])} * {term(self.inputs[1])}"

    def contract(self, a: np.ndarray, b: np.ndarray, a_batch: str, b_batch: str, out_batch: str) -> np.ndarray:
        """Apply the instruction to stacks of operand tiles.

        `a` has axes `a_batch + inputs[0].dims`, `b` has `b_batch + inputs[1].dims`;
        the result has `out_batch + output.dims`. Batch axes are named with
        letters that the caller picks from `batch_letters()`.
        """
        letters = self._letters()
        spec = (
            a_batch + "".join(letters[d] for d in self.inputs[0].dims) + ","
            + b_batch + "".join(letters[d] for d in self.inputs[1].dims) + "->"
            + out_batch + "".join(letters[d] for d in self.output.dims)
        )
        return np.einsum(spec, a, b, optimize=True)

    def _letters(self) -> dict[str, str]:
        return {d: string.ascii_uppercase[i] for i, d in enumerate(self.dim_names)}

    @staticmethod
    def batch_letters() -> str:
        """Lower-case letters are free for the caller's batch axes."""
        return string.ascii_lowercase


def parse_pattern(statement: str, lanes: dict[str, int]) -> Pattern:
    """Parse `acc[b,o] += inp[b,i] * wgt[o,i]` and check it against the lane extents."""
    match = _STATEMENT.match(statement)
    if not match:
        raise IsaError(
            f"intrinsic statement {statement!r} is not of the form 'out[x,y] += a[x,z] * b[y,z]'"
        )
    names_dims = [
        (match.group(i), tuple(d.strip() for d in match.group(i + 1).split(",") if d.strip()))
        for i in (1, 3, 5)
    ]
    (out_name, out_dims), (a_name, a_dims), (b_name, b_dims) = names_dims
    if len({out_name, a_name, b_name}) != 3:
        raise IsaError(f"intrinsic statement {statement!r} names an operand twice")
    used: list[str] = []
    for dims in (out_dims, a_dims, b_dims):
        if len(set(dims)) != len(dims):
            raise IsaError(f"intrinsic statement {statement!r} repeats a dim inside one operand")
        used += [d for d in dims if d not in used]
    missing = [d for d in used if d not in lanes]
    if missing:
        raise IsaError(f"intrinsic lanes do not give an extent for {', '.join(missing)}")
    extra = [d for d in lanes if d not in used]
    if extra:
        raise IsaError(f"intrinsic lanes name {', '.join(extra)}, which the statement does not use")
    for d in used:
        if not isinstance(lanes[d], int) or isinstance(lanes[d], bool) or lanes[d] < 1:
            raise IsaError(f"intrinsic lane {d} must have a positive whole extent, got {lanes[d]!r}")
        if sum(d in dims for dims in (out_dims, a_dims, b_dims)) < 2:
            raise IsaError(
                f"intrinsic dim {d} must appear in at least two of the three operands "
                "(an output dim in one input, a reduction dim in both inputs, or a batched dim in all three)"
            )
    return Pattern(
        output=Operand(out_name, out_dims),
        inputs=(Operand(a_name, a_dims), Operand(b_name, b_dims)),
        lanes=tuple((d, lanes[d]) for d in used),
    )
