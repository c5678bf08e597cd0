"""The TEMPLATE family's description: what its ISA files say, checked.

An ISA file of this family has three tables:

    [accelerator]      name, family = "TEMPLATE"
    [intrinsic]        statement (an einsum, embedcsp.pattern) and lanes (its extents)
    [template_config]  bytes_per_cycle, macs_per_cycle (the cycle model), optionally
                       issue_cycles (per program record, default 1)

Inputs are int8, the accumulator int32: the family has no dtypes table. Add your
hardware's numbers (buffer sizes, clock, ...) to `TemplateConfig` and to `KEYS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from embedcsp.accelerator import Accelerator, check_keys
from embedcsp.errors import IsaError
from embedcsp.pattern import Pattern, parse_pattern

NAME = "TEMPLATE"  # the `[accelerator] family` of this family's ISA files; rename it when you copy
TABLE = "template_config"  # the family's own ISA table (rename it too, if you like)
KEYS = {"bytes_per_cycle": None, "macs_per_cycle": None, "issue_cycles": 1}  # None: required
CLASSES = ("bat", "row", "col", "red")  # the matrix axes (embedcsp/embedding.py), outer first


@dataclass(frozen=True)
class TemplateConfig:
    """A loaded description: the instruction, and the cycle model's rates."""

    pattern: Pattern
    bytes_per_cycle: int  # DRAM bandwidth
    macs_per_cycle: int  # peak compute
    issue_cycles: int = 1  # cycles to issue one program record

    def tables(self) -> dict:
        """The ISA tables this came from, as plain data (the description's digest reads them)."""
        return {"intrinsic": {"statement": self.pattern.statement(), "lanes": dict(self.pattern.lanes)},
                TABLE: {"bytes_per_cycle": self.bytes_per_cycle, "macs_per_cycle": self.macs_per_cycle,
                        "issue_cycles": self.issue_cycles}}

    def tag(self) -> str:
        return f"{NAME} {'x'.join(str(e) for _, e in self.pattern.lanes)}"

    # -- the tile layout, derived from the statement alone (docs/template-family.md) --

    def dim_class(self, dim: str) -> str:
        """bat (in all three operands), row (output and first input), col (output and second
        input) or red (both inputs, summed)."""
        p = self.pattern
        out, a, b = dim in p.output.dims, dim in p.inputs[0].dims, dim in p.inputs[1].dims
        return "bat" if out and a and b else "row" if out and a else "col" if out else "red"

    def storage_dims(self, operand: str) -> tuple[str, ...]:
        """An operand's dims in the order its tile is stored: class-major (CLASSES order), then
        the statement's dim order, as embedcsp.layout.element_map lays out lanes."""
        own = self.pattern.operand(operand).dims
        return tuple(d for c in CLASSES for d in self.pattern.dim_names
                     if d in own and self.dim_class(d) == c)

    def tile_lanes(self, operand: str) -> int:
        return math.prod(self.pattern.extents[d] for d in self.pattern.operand(operand).dims)

    @property
    def operand_names(self) -> tuple[str, str, str]:
        """(first input, second input, output), as the statement names them."""
        p = self.pattern
        return (p.inputs[0].name, p.inputs[1].name, p.output.name)


def _positive(table: dict, key: str, source: str) -> int:
    value = table[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise IsaError(f"{source}: [{TABLE}] {key} must be a positive whole number, got {value!r}")
    return value


def config_from_doc(doc: dict, source: str) -> TemplateConfig:
    """A parsed ISA file (or a bundle's copy of its tables) to a TemplateConfig; IsaError otherwise."""
    check_keys(doc, "top-level table", ("accelerator", "intrinsic", TABLE), ("accelerator", "intrinsic", TABLE),
               source)
    for label in ("intrinsic", TABLE):
        if not isinstance(doc[label], dict):
            raise IsaError(f"{source}: [{label}] must be a table")
    intrinsic = doc["intrinsic"]
    check_keys(intrinsic, "[intrinsic]", ("statement", "lanes"), ("statement", "lanes"), source)
    if not isinstance(intrinsic["statement"], str) or not isinstance(intrinsic["lanes"], dict):
        raise IsaError(f"{source}: [intrinsic] needs a statement string and a lanes table")
    try:
        pattern = parse_pattern(intrinsic["statement"], intrinsic["lanes"])
    except IsaError as exc:
        raise IsaError(f"{source}: {exc}") from None
    table = {k: v for k, v in KEYS.items() if v is not None} | doc[TABLE]
    check_keys(table, f"[{TABLE}]", tuple(KEYS), tuple(k for k, v in KEYS.items() if v is None), source)
    return TemplateConfig(pattern, **{k: _positive(table, k, source) for k in KEYS})


def load(doc: dict, source: str) -> Accelerator:
    """The family's `load`: an ISA file to an Accelerator."""
    config = config_from_doc(doc, source)
    head = doc["accelerator"]
    check_keys(head, "[accelerator]", ("name", "family"), ("name", "family"), source)
    if not isinstance(head["name"], str) or not head["name"]:
        raise IsaError(f"{source}: [accelerator] name must be a non-empty string")
    return Accelerator(head["name"], NAME, config.pattern, config, source)


def describe(config: TemplateConfig) -> list[str]:
    """What `embedcsp isa show` prints beyond the instruction."""
    tiles = ", ".join(f"{q} {config.tile_lanes(q)} lanes ({' '.join(config.storage_dims(q)) or 'scalar'})"
                      for q in config.operand_names)
    return [f"tiles       {tiles}; inputs int8, accumulator int32",
            f"cycle model {config.macs_per_cycle} MACs/cycle, {config.bytes_per_cycle} B/cycle, "
            f"{config.issue_cycles} cycle(s) per record"]
