"""The tile family's description: one instruction as an einsum, its operand types, on-chip
capacities and DMA width (docs/tile.md sections 1-2).

An ISA file of the family holds five tables, fixed by the design brief
(../shared/design.md section 6) because users and tests write them:

    [accelerator]  name, family = "tile"
    [intrinsic]    statement, lanes = {dim = extent}, ii
    [dtypes]       per operand: "int8" | "uint8" | "int16" | "int32" (optional)
    [memory]       per operand: on-chip bytes
    [dma]          bytes_per_cycle

`tile_from_dict` validates a parsed document and builds the `Accelerator`;
every refusal is an IsaError naming the file and the key. The statement is
read here rather than by `embedcsp.pattern.parse_pattern`, because this family
also accepts batched lanes (a dim indexing all three operands), which
parse_pattern refuses today.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedcsp.accelerator import Accelerator, check_keys
from embedcsp.errors import IsaError
from embedcsp.pattern import Operand, Pattern

TABLES = ("accelerator", "intrinsic", "dtypes", "memory", "dma")
ACCELERATOR_KEYS = ("name", "family")
INTRINSIC_KEYS = ("statement", "lanes", "ii")
DMA_KEYS = ("bytes_per_cycle",)

# A Load/Store record describes at most this many dims of its operand (docs/tile.md
# section 5): four covers every operand of a 4-D tensor, and fixed-size records need a bound.
MAX_RANK = 4
# The record's `valid` fields and slot numbers are u32.
MAX_EXTENT = (1 << 32) - 1

_TERM = r"(\w+)\s*\[([\w\s,]*)\]"
_STATEMENT = re.compile(rf"^\s*{_TERM}\s*\+=\s*{_TERM}\s*\*\s*{_TERM}\s*$")


@dataclass(frozen=True)
class DType:
    """An integer element type of an operand: size, signedness and range."""

    name: str
    bytes: int
    signed: bool

    @property
    def lo(self) -> int:
        return -(1 << (8 * self.bytes - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (8 * self.bytes - 1)) - 1 if self.signed else (1 << (8 * self.bytes)) - 1

    @property
    def magnitude(self) -> int:
        """The largest |value| of the type."""
        return max(-self.lo, self.hi)

    @property
    def numpy(self) -> str:
        """The little-endian numpy type code of the bytes in DRAM."""
        return f"<{'i' if self.signed else 'u'}{self.bytes}"


DTYPES = {
    "int8": DType("int8", 1, True),
    "uint8": DType("uint8", 1, False),
    "int16": DType("int16", 2, True),
    "int32": DType("int32", 4, True),
}
_SHORT = {"int8": "i8", "uint8": "u8", "int16": "i16", "int32": "i32"}
DEFAULT_INPUT = "int8"
DEFAULT_OUTPUT = "int32"

# The functional model sums in int64: the accumulator's previous value plus every product
# of one instruction must stay below this bound, or the arithmetic would not be exact.
EXACT_LIMIT = (1 << 63) - 1


@dataclass(frozen=True)
class TileConfig:
    """A validated tile description; build it with `tile_from_dict` or `tile_accelerator`.

    Tuples keep the value hashable; operand tables are in the pattern's operand order
    (first input, second input, output).
    """

    pattern: Pattern
    ii: int
    dtypes: tuple[tuple[str, str], ...]
    memory: tuple[tuple[str, int], ...]
    bytes_per_cycle: int

    # ---- operands
    @property
    def operand_names(self) -> tuple[str, str, str]:
        """(first input, second input, output): the operand numbering of program records."""
        p = self.pattern
        return (p.inputs[0].name, p.inputs[1].name, p.output.name)

    def operand_index(self, name: str) -> int:
        return self.operand_names.index(name)

    def dims_of(self, name: str) -> tuple[str, ...]:
        return self.pattern.operand(name).dims

    def dtype(self, name: str) -> DType:
        return DTYPES[dict(self.dtypes)[name]]

    def tile_shape(self, name: str) -> tuple[int, ...]:
        """The lane extents of the operand's dims, in the operand's order."""
        ext = self.pattern.extents
        return tuple(ext[d] for d in self.dims_of(name))

    def tile_bytes(self, name: str) -> int:
        return math.prod(self.tile_shape(name)) * self.dtype(name).bytes

    def capacity(self, name: str) -> int:
        return dict(self.memory)[name]

    def slots(self, name: str) -> int:
        """Tiles the operand's memory holds: slot s is bytes [s * tile, (s + 1) * tile)."""
        return self.capacity(name) // self.tile_bytes(name)

    # ---- lanes
    def lane_kind(self, dim: str) -> str:
        """'spatial' (output and one input), 'reduction' (both inputs) or 'batched' (all three)."""
        return _lane_kind(self.pattern, dim)

    @property
    def reduction(self) -> int:
        """Products one output element sums in one instruction."""
        ext = self.pattern.extents
        return math.prod(ext[d] for d in self.pattern.dim_names if self.lane_kind(d) == "reduction")

    @property
    def macs(self) -> int:
        return self.pattern.macs

    # ---- the ISA file
    def tables(self) -> dict[str, dict[str, Any]]:
        """The ISA file's tables this description came from, every default written out."""
        return {
            "intrinsic": {"statement": self.pattern.statement(), "lanes": dict(self.pattern.lanes),
                          "ii": self.ii},
            "dtypes": dict(self.dtypes),
            "memory": dict(self.memory),
            "dma": {"bytes_per_cycle": self.bytes_per_cycle},
        }

    def tag(self) -> str:
        """A short name for reports: lanes and ii, e.g. 'm16n8k16 ii1', plus the operand types
        when they are not the defaults (int8 inputs, int32 output)."""
        lanes = "".join(f"{d}{e}" for d, e in self.pattern.lanes)
        out = f"{lanes} ii{self.ii}"
        defaults = (DEFAULT_INPUT, DEFAULT_INPUT, DEFAULT_OUTPUT)
        types = tuple(dict(self.dtypes)[n] for n in self.operand_names)
        if types != defaults:
            out += " " + "/".join(_SHORT[t] for t in types)
        return out


def _lane_kind(p: Pattern, dim: str) -> str:
    a, b = (set(o.dims) for o in p.inputs)
    if dim in p.output.dims:
        return "batched" if dim in a and dim in b else "spatial"
    return "reduction"


# ---------------------------------------------------------------- checks

def _whole(value: Any) -> bool:
    """A TOML integer: bool is an int in Python but never a count."""
    return isinstance(value, int) and not isinstance(value, bool)


def _table(doc: Mapping, key: str, source: str, required: bool = True) -> Mapping:
    if key not in doc:
        if required:
            article = "an" if key[0] in "aeiou" else "a"
            raise IsaError(f"{source}: a tile ISA file needs {article} [{key}] table")
        return {}
    value = doc[key]
    if not isinstance(value, Mapping):
        raise IsaError(f"{source}: [{key}] must be a table, got {type(value).__name__}")
    return value


def _positive(value: Any, where: str, source: str) -> int:
    if not _whole(value):
        raise IsaError(f"{source}: {where} must be a whole number, got {value!r}")
    if value < 1:
        raise IsaError(f"{source}: {where} must be >= 1, got {value}")
    return value


def parse_statement(statement: Any, lanes: Any, source: str) -> Pattern:
    """`out[...] += a[...] * b[...]` with its lane extents, batched dims allowed (docs/tile.md 2)."""
    if not isinstance(statement, str):
        raise IsaError(f"{source}: [intrinsic] statement must be a string such as "
                       f"'c[m,n] += a[m,k] * b[k,n]', got {statement!r}")
    if not isinstance(lanes, Mapping):
        raise IsaError(f"{source}: [intrinsic] lanes must be a table such as "
                       f"{{ m = 16, n = 8, k = 16 }}, got {lanes!r}")
    match = _STATEMENT.match(statement)
    if not match:
        raise IsaError(f"{source}: [intrinsic] statement {statement!r} is not of the form "
                       "'out[x,y] += a[x,z] * b[z,y]'")
    terms = [(match.group(i), tuple(d.strip() for d in match.group(i + 1).split(",")))
             for i in (1, 3, 5)]
    for name, dims in terms:
        if any(not d for d in dims) and dims != ("",):
            raise IsaError(f"{source}: [intrinsic] statement {statement!r}: operand {name} has an "
                           "empty dim name")
    terms = [(name, () if dims == ("",) else dims) for name, dims in terms]
    names = [n for n, _ in terms]
    if len(set(names)) != 3:
        raise IsaError(f"{source}: [intrinsic] statement {statement!r} names an operand twice")
    used: list[str] = []
    for name, dims in terms:
        if len(set(dims)) != len(dims):
            raise IsaError(f"{source}: [intrinsic] statement {statement!r} repeats a dim inside {name}")
        if len(dims) > MAX_RANK:
            raise IsaError(f"{source}: [intrinsic] operand {name} has {len(dims)} dims; program "
                           f"records describe at most {MAX_RANK}")
        used += [d for d in dims if d not in used]
    if not used:
        raise IsaError(f"{source}: [intrinsic] statement {statement!r} has no dims; a tile "
                       "instruction needs at least one lane")
    for d in used:
        count = sum(d in dims for _, dims in terms)
        if count < 2:
            raise IsaError(f"{source}: [intrinsic] dim {d} appears only in "
                           f"{next(n for n, dims in terms if d in dims)}; a dim must index the "
                           "output and one input (spatial), both inputs (reduction), or all three "
                           "(batched)")
    missing = [d for d in used if d not in lanes]
    if missing:
        raise IsaError(f"{source}: [intrinsic] lanes give no extent for {', '.join(missing)}")
    extra = [d for d in lanes if d not in used]
    if extra:
        raise IsaError(f"{source}: [intrinsic] lanes name {', '.join(extra)}, which the statement "
                       "does not use")
    for d in used:
        value = _positive(lanes[d], f"[intrinsic] lane {d}", source)
        if value > MAX_EXTENT:
            raise IsaError(f"{source}: [intrinsic] lane {d} = {value} does not fit the u32 extent "
                           "of a program record")
    (out_name, out_dims), (a_name, a_dims), (b_name, b_dims) = terms
    return Pattern(output=Operand(out_name, out_dims),
                   inputs=(Operand(a_name, a_dims), Operand(b_name, b_dims)),
                   lanes=tuple((d, lanes[d]) for d in used))


def _dtypes(table: Mapping, pattern: Pattern, source: str) -> tuple[tuple[str, str], ...]:
    ops = (pattern.inputs[0].name, pattern.inputs[1].name, pattern.output.name)
    unknown = sorted(set(table) - set(ops))
    if unknown:
        raise IsaError(f"{source}: [dtypes] names {', '.join(unknown)}, which the statement does not "
                       f"use; its operands are {', '.join(ops)}")
    out = []
    for name, default in zip(ops, (DEFAULT_INPUT, DEFAULT_INPUT, DEFAULT_OUTPUT)):
        value = table.get(name, default)
        if not isinstance(value, str):
            raise IsaError(f"{source}: [dtypes] {name} must be a string such as 'int8', got {value!r}")
        if value not in DTYPES:
            raise IsaError(f"{source}: [dtypes] {name} = {value!r} is not supported; expected one of "
                           f"{', '.join(DTYPES)} (integer types the model computes exactly)")
        out.append((name, value))
    return tuple(out)


def _check_exact(pattern: Pattern, dtypes: dict[str, str], source: str) -> None:
    """The model sums one instruction in int64: the previous accumulator value plus all products
    one output element receives must stay exact."""
    a, b = (DTYPES[dtypes[o.name]] for o in pattern.inputs)
    out = DTYPES[dtypes[pattern.output.name]]
    red = math.prod(e for d, e in pattern.lanes if _lane_kind(pattern, d) == "reduction")
    worst = out.magnitude + red * a.magnitude * b.magnitude
    if worst > EXACT_LIMIT:
        raise IsaError(f"{source}: [dtypes] {a.name} x {b.name} products summed over {red} reduction "
                       f"lanes into {out.name} can reach {worst}, beyond the int64 the model computes "
                       "in; the arithmetic would not be exact")


def _memory(table: Mapping, pattern: Pattern, dtypes: dict[str, str],
            source: str) -> tuple[tuple[str, int], ...]:
    ops = (pattern.inputs[0].name, pattern.inputs[1].name, pattern.output.name)
    unknown = sorted(set(table) - set(ops))
    if unknown:
        raise IsaError(f"{source}: [memory] names {', '.join(unknown)}, which the statement does not "
                       f"use; its operands are {', '.join(ops)}")
    missing = [n for n in ops if n not in table]
    if missing:
        raise IsaError(f"{source}: [memory] is missing {', '.join(missing)} (bytes of on-chip memory "
                       "for every operand)")
    ext = pattern.extents
    out = []
    for name in ops:
        value = _positive(table[name], f"[memory] {name}", source)
        dims = pattern.operand(name).dims
        dt = DTYPES[dtypes[name]]
        need = math.prod(ext[d] for d in dims) * dt.bytes
        if value < need:
            shape = "x".join(str(ext[d]) for d in dims) or "scalar"
            raise IsaError(f"{source}: [memory] {name} = {value} bytes cannot hold one {name} tile "
                           f"({shape} {dt.name} = {need} bytes)")
        if value // need > MAX_EXTENT + 1:
            raise IsaError(f"{source}: [memory] {name} = {value} bytes holds more tiles than a u32 "
                           "slot number can name")
        out.append((name, value))
    return tuple(out)


# ---------------------------------------------------------------- loading

def tile_config_from_dict(doc: Any, source: str) -> tuple[str, TileConfig]:
    """(name, config) of a parsed tile ISA document; IsaError naming `source` and the key."""
    if not isinstance(doc, Mapping):
        raise IsaError(f"{source}: an ISA file must be a table of tables, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(TABLES))
    if unknown:
        raise IsaError(f"{source}: unknown table(s) {', '.join(unknown)}; a tile ISA file has "
                       f"{', '.join(TABLES)}")
    head = _table(doc, "accelerator", source)
    check_keys(head, "[accelerator]", ACCELERATOR_KEYS, ACCELERATOR_KEYS, source)
    if head["family"] != "tile":
        raise IsaError(f"{source}: [accelerator] family must be 'tile' here, got {head['family']!r}")
    name = head["name"]
    if not isinstance(name, str) or not name.strip():
        raise IsaError(f"{source}: [accelerator] name must be a non-empty string, got {name!r}")
    intrinsic = _table(doc, "intrinsic", source)
    check_keys(intrinsic, "[intrinsic]", INTRINSIC_KEYS, INTRINSIC_KEYS, source)
    pattern = parse_statement(intrinsic["statement"], intrinsic["lanes"], source)
    ii = _positive(intrinsic["ii"], "[intrinsic] ii", source)
    dtypes = _dtypes(_table(doc, "dtypes", source, required=False), pattern, source)
    _check_exact(pattern, dict(dtypes), source)
    memory = _memory(_table(doc, "memory", source), pattern, dict(dtypes), source)
    dma = _table(doc, "dma", source)
    check_keys(dma, "[dma]", DMA_KEYS, DMA_KEYS, source)
    bpc = _positive(dma["bytes_per_cycle"], "[dma] bytes_per_cycle", source)
    return name, TileConfig(pattern=pattern, ii=ii, dtypes=dtypes, memory=memory, bytes_per_cycle=bpc)


def tile_from_dict(doc: Any, source: str) -> Accelerator:
    """An Accelerator of the tile family from a parsed ISA file (docs/tile.md section 1)."""
    name, cfg = tile_config_from_dict(doc, source)
    return Accelerator(name=name, family="tile", pattern=cfg.pattern, config=cfg, source=source)


def tile_accelerator(statement: str, lanes: Mapping[str, int], *, memory: Mapping[str, int],
                     bytes_per_cycle: int, ii: int = 1, dtypes: Mapping[str, str] | None = None,
                     name: str = "tile") -> Accelerator:
    """The same description from Python, checked exactly as an ISA file is."""
    doc = {
        "accelerator": {"name": name, "family": "tile"},
        "intrinsic": {"statement": statement, "lanes": dict(lanes), "ii": ii},
        "dtypes": dict(dtypes or {}),
        "memory": dict(memory),
        "dma": {"bytes_per_cycle": bytes_per_cycle},
    }
    return tile_from_dict(doc, name)


def load_tile(path: str | Path) -> Accelerator:
    """Read a tile ISA file (the registry does not know the family yet; this is the direct way)."""
    from embedcsp.accelerator import tomllib  # tomllib on 3.11+, tomli on 3.10

    path = Path(path)
    if not path.is_file():
        raise IsaError(f"ISA file {str(path)!r} does not exist")
    source = str(path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise IsaError(f"{source}: not valid TOML ({exc})") from None
    return tile_from_dict(doc, source)


def describe(cfg: TileConfig) -> list[str]:
    """What the family derives from a description, one fact a line (for `embedcsp isa show`)."""
    # The statement and its lanes are the core's lines (`isa show`); the rate is the family's.
    lines = [f"rate       one instruction every {cfg.ii} cycle(s): {cfg.macs} MACs"]
    for name in cfg.operand_names:
        shape = "x".join(str(e) for e in cfg.tile_shape(name)) or "scalar"
        lines.append(f"memory     {name}: {cfg.capacity(name)} B, {cfg.slots(name)} slot(s) of one "
                     f"{shape} {cfg.dtype(name).name} tile ({cfg.tile_bytes(name)} B)")
    lines.append(f"dma        {cfg.bytes_per_cycle} B/cycle")
    return lines
