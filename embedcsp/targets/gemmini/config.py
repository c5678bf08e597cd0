"""The parameters of one Gemmini build that a program relies on (docs/gemmini.md section 1).

A Gemmini build is fixed by seven values, the keys of `[gemmini_config]` in an
ISA file and of `gemmini_config` in a bundle's manifest. Every capacity and
RTL field limit the encoder and the functional model check is derived from
them here, so a variant is a new TOML file, not new code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from embedcsp.accelerator import Accelerator, check_keys
from embedcsp.errors import IsaError
from embedcsp.pattern import parse_pattern

CONFIG_KEYS = ("DIM", "BANK_NUM", "BANK_ROWS", "ACC_ROWS", "MAX_BYTES", "elem_t", "acc_t")

# Element types the family supports, with their sizes in bytes. Gemmini builds
# with float inputs exist; embedcsp's operators are int8 x int8 -> int32 only.
ELEM_TYPES = {"int8": 1}
ACC_TYPES = {"int32": 4}

# The C header hard-codes this constant on every build; the RTL's DMA width does
# not change it (docs/gemmini.md section 1).
FIXED_MAX_BYTES = 64

# The RTL sums inside the array in 20-bit signed registers: 31 products of two int8
# (31 * 2^14 plus an int8 bias) stay below 2^19, 32 may not (docs/gemmini.md section 6).
MAX_ARRAY_PRODUCTS = 31

# The instruction embedcsp embeds: one preload/compute pair, C[i,j] += A[i,k] * B[k,j] on a
# DIM x DIM tile (rows i of A, columns j of B, k the reduction lanes).
STATEMENT = "c[i,j] += a[i,k] * b[k,j]"

# Local row indices live in bits 25:0 of a local address, and the RTL keeps a
# "garbage" bit just above the row bits, so a memory may hold at most 2^25 rows.
MAX_LOCAL_ROWS = 1 << 25


def _is_pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


@dataclass(frozen=True)
class GemminiConfig:
    """The seven `gemmini_config` values; everything else is a derived property."""

    DIM: int = 16
    BANK_NUM: int = 4
    BANK_ROWS: int = 4096
    ACC_ROWS: int = 1024
    MAX_BYTES: int = 64
    elem_t: str = "int8"
    acc_t: str = "int32"

    def __post_init__(self) -> None:
        validate_config(self)

    def as_dict(self) -> dict[str, Any]:
        """The manifest's `gemmini_config` object (docs/gemmini.md section 7)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # ---- element sizes
    @property
    def elem_bytes(self) -> int:
        return ELEM_TYPES[self.elem_t]

    @property
    def acc_bytes(self) -> int:
        return ACC_TYPES[self.acc_t]

    @property
    def elem_min(self) -> int:
        return -(1 << (8 * self.elem_bytes - 1))

    @property
    def elem_max(self) -> int:
        return (1 << (8 * self.elem_bytes - 1)) - 1

    # ---- capacities, in rows of DIM elements
    @property
    def sp_rows(self) -> int:
        """Scratchpad rows: all banks together."""
        return self.BANK_NUM * self.BANK_ROWS

    @property
    def acc_rows(self) -> int:
        return self.ACC_ROWS

    @property
    def sp_bytes(self) -> int:
        return self.sp_rows * self.DIM * self.elem_bytes

    @property
    def acc_capacity_bytes(self) -> int:
        return self.acc_rows * self.DIM * self.acc_bytes

    # ---- what one mvin/mvout may move
    @property
    def max_block_len(self) -> int:
        """DIM-column blocks of elem data per mvin/mvout (the header's MAX_BLOCK_LEN)."""
        return self.MAX_BYTES // (self.DIM * self.elem_bytes)

    @property
    def max_block_len_acc(self) -> int:
        """DIM-column blocks of acc data per mvin (the header's MAX_BLOCK_LEN_ACC; 0 when a
        whole accumulator row is wider than one request)."""
        return self.MAX_BYTES // (self.DIM * self.acc_bytes)

    @property
    def max_cols_elem(self) -> int:
        """Columns of an mvin/mvout of elem data: one MAX_BYTES request."""
        return self.MAX_BYTES // self.elem_bytes

    @property
    def max_cols_acc(self) -> int:
        """Columns of an mvin of acc data (unshrunk into the accumulator)."""
        return self.MAX_BYTES // self.acc_bytes

    @property
    def max_cols_full_mvout(self) -> int:
        """Columns of a full-width (int32) mvout: one request, and one block, since the RTL
        has no multi-block full-width mvout."""
        return min(self.DIM, self.max_cols_acc)

    # ---- RTL field widths (docs/gemmini.md section 1, field table)
    @property
    def rows_bits(self) -> int:
        """Width of the rows field of mvin/mvout/preload/compute: log2(DIM + 1) rounded up."""
        return self.DIM.bit_length()

    @property
    def cols_bits(self) -> int:
        """Width of the cols field of mvin/mvout: log2(max(MAX_BYTES / elem bytes, DIM) + 1)."""
        return max(self.max_cols_elem, self.DIM).bit_length()

    @property
    def sp_addr_bits(self) -> int:
        return self.sp_rows.bit_length() - 1

    @property
    def acc_addr_bits(self) -> int:
        return self.acc_rows.bit_length() - 1

    def tables(self) -> dict[str, dict[str, Any]]:
        """The ISA file's table these values come from (Accelerator.description, the digest)."""
        return {"gemmini_config": self.as_dict()}

    def lane_labels(self) -> dict[str, str]:
        """Gemmini's names of the instruction's lane classes, for reports."""
        return {"row": "A rows", "col": "B columns", "red": "reduction rows"}

    @property
    def red_lanes(self) -> int:
        """Reduction lanes of one compute: DIM, but never more products per output than the
        RTL's 20-bit in-array partial sums hold (docs/gemmini.md section 6)."""
        return min(self.DIM, MAX_ARRAY_PRODUCTS)

    def tag(self) -> str:
        """A short name for reports: `16x16_i8a32_sp256K_acc64K`."""
        return (f"{self.DIM}x{self.DIM}_i{8 * self.elem_bytes}a{8 * self.acc_bytes}"
                f"_sp{self.sp_bytes // 1024}K_acc{self.acc_capacity_bytes // 1024}K")


def validate_config(cfg: GemminiConfig) -> None:
    """Refuse values no Gemmini build has, naming the key (docs/gemmini.md section 1)."""
    for key in ("DIM", "BANK_NUM", "BANK_ROWS", "ACC_ROWS", "MAX_BYTES"):
        value = getattr(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise IsaError(f"gemmini_config {key} must be a whole number, got {value!r}")
        if value < 1:
            raise IsaError(f"gemmini_config {key} must be >= 1, got {value}")
    for key, allowed in (("elem_t", ELEM_TYPES), ("acc_t", ACC_TYPES)):
        value = getattr(cfg, key)
        if not isinstance(value, str):
            raise IsaError(f"gemmini_config {key} must be a string such as {next(iter(allowed))!r}, "
                           f"got {value!r}")
        if value not in allowed:
            raise IsaError(f"gemmini_config {key} = {value!r} is not supported; "
                           f"expected {', '.join(repr(a) for a in allowed)}")
    if cfg.MAX_BYTES != FIXED_MAX_BYTES:
        raise IsaError(f"gemmini_config MAX_BYTES must be {FIXED_MAX_BYTES} (every Gemmini build's "
                       f"header fixes it), got {cfg.MAX_BYTES}")
    if not _is_pow2(cfg.DIM) or cfg.DIM < 2:
        raise IsaError(f"gemmini_config DIM must be a power of two >= 2, got {cfg.DIM}")
    if cfg.DIM * ELEM_TYPES[cfg.elem_t] > cfg.MAX_BYTES:
        raise IsaError(f"gemmini_config DIM = {cfg.DIM}: a scratchpad row of {cfg.elem_t} is wider "
                       f"than MAX_BYTES = {cfg.MAX_BYTES}, so no mvin could move a whole row")
    if not _is_pow2(cfg.BANK_ROWS) or cfg.BANK_ROWS % cfg.DIM:
        raise IsaError(f"gemmini_config BANK_ROWS must be a power of two and a multiple of DIM "
                       f"= {cfg.DIM}, got {cfg.BANK_ROWS}")
    if not _is_pow2(cfg.BANK_NUM):
        raise IsaError(f"gemmini_config BANK_NUM must be a power of two, got {cfg.BANK_NUM}")
    if not _is_pow2(cfg.ACC_ROWS) or cfg.ACC_ROWS % cfg.DIM:
        raise IsaError(f"gemmini_config ACC_ROWS must be a power of two and a multiple of DIM "
                       f"= {cfg.DIM}, got {cfg.ACC_ROWS}")
    if cfg.BANK_NUM * cfg.BANK_ROWS > MAX_LOCAL_ROWS:
        raise IsaError(f"gemmini_config BANK_NUM * BANK_ROWS = {cfg.BANK_NUM * cfg.BANK_ROWS} "
                       f"scratchpad rows do not fit a local address (at most {MAX_LOCAL_ROWS})")
    if cfg.ACC_ROWS > MAX_LOCAL_ROWS:
        raise IsaError(f"gemmini_config ACC_ROWS = {cfg.ACC_ROWS} does not fit a local address "
                       f"(at most {MAX_LOCAL_ROWS})")


def gemmini_config_from_dict(table: Mapping[str, Any], source: str) -> GemminiConfig:
    """A `[gemmini_config]` table (already parsed) to a config; IsaError names `source` and the key."""
    if not isinstance(table, Mapping):
        raise IsaError(f"{source}: [gemmini_config] must be a table, got {type(table).__name__}")
    check_keys(table, "gemmini_config", CONFIG_KEYS, CONFIG_KEYS, source)
    try:
        return GemminiConfig(**dict(table))
    except IsaError as exc:
        raise IsaError(f"{source}: {exc}") from None


def gemmini_config_from_toml(doc: Mapping[str, Any], source: str) -> GemminiConfig:
    """The config of a whole parsed ISA document whose `[accelerator] family` is "gemmini"."""
    head = doc.get("accelerator")
    if not isinstance(head, Mapping) or head.get("family") != "gemmini":
        family = head.get("family") if isinstance(head, Mapping) else None
        raise IsaError(f"{source}: [accelerator] family must be 'gemmini' here, got {family!r}")
    if "gemmini_config" not in doc:
        raise IsaError(f"{source}: a gemmini ISA file needs a [gemmini_config] table")
    return gemmini_config_from_dict(doc["gemmini_config"], source)


def load_gemmini_config(path: str | Path | None = None) -> GemminiConfig:
    """Read an ISA file's `[gemmini_config]`; None means the shipped isa/gemmini.toml."""
    from embedcsp.accelerator import tomllib  # tomllib on 3.11+, tomli on 3.10

    if path is None:
        text = resources.files("embedcsp.isa").joinpath("gemmini.toml").read_text()
        source = "gemmini.toml"
    else:
        path = Path(path)
        if not path.is_file():
            raise IsaError(f"ISA file {str(path)!r} does not exist")
        text, source = path.read_text(), str(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise IsaError(f"{source}: not valid TOML ({exc})") from None
    return gemmini_config_from_toml(doc, source)


def gemmini_accelerator(cfg: GemminiConfig, name: str = "gemmini", source: str = "gemmini") -> Accelerator:
    """The Accelerator of a Gemmini build: its config and the pattern of one preload/compute
    pair, `c[i,j] += a[i,k] * b[k,j]` with i, j < DIM and k < red_lanes."""
    pattern = parse_pattern(STATEMENT, {"i": cfg.DIM, "j": cfg.DIM, "k": cfg.red_lanes})
    return Accelerator(name=name, family="gemmini", pattern=pattern, config=cfg, source=source)


def gemmini_from_dict(doc: Mapping[str, Any], source: str) -> Accelerator:
    """An ISA file's tables ([accelerator], [gemmini_config]) to an Accelerator. The
    instruction is fixed by the hardware, so the file has no [intrinsic] table."""
    unknown = sorted(set(doc) - {"accelerator", "gemmini_config"})
    if unknown:
        raise IsaError(f"{source}: unknown section(s) {', '.join(unknown)}; a gemmini ISA file has "
                       "[accelerator] and [gemmini_config] (its instruction is fixed by the hardware)")
    cfg = gemmini_config_from_toml(doc, source)
    head = doc["accelerator"]
    name = head.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise IsaError(f"{source}: [accelerator] name must be a non-empty string, got {name!r}")
    return gemmini_accelerator(cfg, name, source)
