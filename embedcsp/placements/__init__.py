"""Placements that whole dims on whole lanes cannot express, as equivalent statements
(docs/placements.md).

The CSP places whole operator dims on whole lane classes. Some of the best placements
split a dim: a banded (Toeplitz) weight tile lets one input column serve several output
columns through different filter taps. Each such placement is said here as another
statement over the *same tensors in the same memory*, whose extra iteration points read
a zero (an index outside a tensor's shape) or write nowhere (an output index outside the
output), so its sum is the original operator's. The CSP then embeds that statement with
its ordinary whole-dim variables, the family builds it like any other, and the program is
verified against the original operator's own ground truth.

One placement = one file here; `placements(op, acc)` lists those that apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from embedcsp.accelerator import Accelerator
from embedcsp.operator import Dim, Operator, Tensor


@dataclass(frozen=True)
class Placement:
    """An equivalent statement of an operator, for the CSP to embed instead of the operator."""

    name: str  # "banded", "block-diagonal"
    operator: Operator  # the statement to embed: the original's tensors, more iteration points
    note: str  # what it does, in the user's terms (the report prints it)

    def as_dict(self) -> dict:
        return {"name": self.name, "statement": self.operator.statement(),
                "dims": self.operator.param_dict, "note": self.note}


def placements(op: Operator, acc: Accelerator) -> list[Placement]:
    """The placements beyond whole dims that apply to `op` on `acc`'s instruction."""
    from embedcsp.placements.banded import banded
    from embedcsp.placements.block_diagonal import block_diagonal

    return banded(op, acc) + block_diagonal(op, acc)


def fresh_name(base: str, taken: set[str]) -> str:
    """`base`, or `base` with underscores appended until no dim of the operator has it."""
    name = base
    while name in taken:
        name += "_"
    return name


def restate(dims: list[Dim], tensors: list[Tensor]) -> Operator:
    """A placement's statement: an einsum over `dims` whose parameters are the dims."""
    return Operator("einsum", tuple((d.name, d.extent) for d in dims), tuple(dims), tuple(tensors))
