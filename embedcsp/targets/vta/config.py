"""The VTA family's description: the ten vta_config numbers and what derives from them.

Every size, depth and instruction field width is derived from the vta_config
numbers (docs/vta.md section 1), so a variant build (other BATCH, BLOCK_IN,
BLOCK_OUT or buffer sizes) needs a new ISA file (docs/isa-files.md), not new code.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from embedcsp.accelerator import Accelerator, check_keys
from embedcsp.errors import IsaError
from embedcsp.pattern import parse_pattern

# Memory ids of LOAD/STORE (docs/vta.md section 2).
MEM_UOP, MEM_WGT, MEM_INP, MEM_ACC, MEM_OUT, MEM_ACC_8BIT = range(6)

# Fixed widths of hw_spec_const.h (docs/vta.md section 2).
MEMOP_SRAM_ADDR_BITS = 16
MEMOP_DRAM_ADDR_BITS = 32
MEMOP_SIZE_BITS = 16
MEMOP_STRIDE_BITS = 16
MEMOP_PAD_BITS = 4
LOOP_ITER_BITS = 14
ALUOP_IMM_BITS = 16
INSN_BITS = 128
UOP_BITS = 32

CONFIG_KEYS = (
    "LOG_INP_WIDTH", "LOG_WGT_WIDTH", "LOG_ACC_WIDTH", "LOG_BATCH", "LOG_BLOCK_IN",
    "LOG_BLOCK_OUT", "LOG_UOP_BUFF_SIZE", "LOG_INP_BUFF_SIZE", "LOG_WGT_BUFF_SIZE",
    "LOG_ACC_BUFF_SIZE",
)


@dataclass(frozen=True)
class VtaConfig:
    """The vta_config.json numbers; everything else is derived."""

    LOG_INP_WIDTH: int = 3
    LOG_WGT_WIDTH: int = 3
    LOG_ACC_WIDTH: int = 5
    LOG_BATCH: int = 0
    LOG_BLOCK_IN: int = 4
    LOG_BLOCK_OUT: int = 4
    LOG_UOP_BUFF_SIZE: int = 15
    LOG_INP_BUFF_SIZE: int = 15
    LOG_WGT_BUFF_SIZE: int = 18
    LOG_ACC_BUFF_SIZE: int = 17

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def batch(self) -> int:
        return 1 << self.LOG_BATCH

    @property
    def block_in(self) -> int:
        return 1 << self.LOG_BLOCK_IN

    @property
    def block_out(self) -> int:
        return 1 << self.LOG_BLOCK_OUT

    # Element ("tile") sizes in bytes of each memory.
    @property
    def inp_elem_bytes(self) -> int:
        return self.batch * self.block_in * (1 << self.LOG_INP_WIDTH) // 8

    @property
    def wgt_elem_bytes(self) -> int:
        return self.block_out * self.block_in * (1 << self.LOG_WGT_WIDTH) // 8

    @property
    def acc_elem_bytes(self) -> int:
        return self.batch * self.block_out * (1 << self.LOG_ACC_WIDTH) // 8

    @property
    def out_elem_bytes(self) -> int:
        return self.batch * self.block_out * (1 << self.LOG_INP_WIDTH) // 8

    uop_elem_bytes = UOP_BITS // 8

    def elem_bytes(self, mem: int) -> int:
        return {
            MEM_UOP: self.uop_elem_bytes, MEM_WGT: self.wgt_elem_bytes,
            MEM_INP: self.inp_elem_bytes, MEM_ACC: self.acc_elem_bytes,
            MEM_OUT: self.out_elem_bytes, MEM_ACC_8BIT: self.out_elem_bytes,
        }[mem]

    # log2 of buffer depths in elements.
    @property
    def log_uop_depth(self) -> int:
        return self.LOG_UOP_BUFF_SIZE - 2

    @property
    def log_inp_depth(self) -> int:
        return self.LOG_INP_BUFF_SIZE - _log2(self.inp_elem_bytes)

    @property
    def log_wgt_depth(self) -> int:
        return self.LOG_WGT_BUFF_SIZE - _log2(self.wgt_elem_bytes)

    @property
    def log_acc_depth(self) -> int:
        return self.LOG_ACC_BUFF_SIZE - _log2(self.acc_elem_bytes)

    def depth(self, mem: int) -> int:
        return 1 << {
            MEM_UOP: self.log_uop_depth, MEM_WGT: self.log_wgt_depth,
            MEM_INP: self.log_inp_depth, MEM_ACC: self.log_acc_depth,
            MEM_OUT: self.log_acc_depth, MEM_ACC_8BIT: self.log_acc_depth,
        }[mem]

    @property
    def uop_src_bits(self) -> int:
        return max(self.log_acc_depth, self.log_inp_depth)

    def tables(self) -> dict[str, dict[str, int]]:
        """The ISA file's table these numbers come from."""
        return {"vta_config": self.as_dict()}

    def lane_labels(self) -> dict[str, str]:
        """VTA's names of the instruction's lane classes, for reports."""
        return {"row": "BATCH", "col": "BLOCK_OUT", "red": "BLOCK_IN"}

    def tag(self) -> str:
        """A short name of the build for reports: VTA's bitstream tag."""
        return self.bitstream_tag()

    def bitstream_tag(self) -> str:
        """VTA's `{BATCH}x{BLOCK}_i8w8a32_{uop}_{inp}_{wgt}_{acc}`; both blocks when they differ."""
        blocks = f"{self.block_in}" if self.block_in == self.block_out else f"{self.block_in}x{self.block_out}"
        return (
            f"{self.batch}x{blocks}_i{1 << self.LOG_INP_WIDTH}"
            f"w{1 << self.LOG_WGT_WIDTH}a{1 << self.LOG_ACC_WIDTH}_{self.LOG_UOP_BUFF_SIZE}_"
            f"{self.LOG_INP_BUFF_SIZE}_{self.LOG_WGT_BUFF_SIZE}_{self.LOG_ACC_BUFF_SIZE}"
        )


def _log2(x: int) -> int:
    return x.bit_length() - 1


def validate_config(cfg: VtaConfig) -> None:
    """Refuse configs that no VTA build can have, with the reason."""
    for key, value in cfg.as_dict().items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise IsaError(f"vta_config {key} must be a whole number >= 0, got {value!r}")
    if (cfg.LOG_INP_WIDTH, cfg.LOG_WGT_WIDTH, cfg.LOG_ACC_WIDTH) != (3, 3, 5):
        raise IsaError(
            "vta_config: only int8 inputs/weights with int32 accumulators are supported "
            "(LOG_INP_WIDTH=3, LOG_WGT_WIDTH=3, LOG_ACC_WIDTH=5)"
        )
    for name, log_depth in (("UOP", cfg.log_uop_depth), ("INP", cfg.log_inp_depth),
                            ("WGT", cfg.log_wgt_depth), ("ACC", cfg.log_acc_depth)):
        if log_depth < 1:
            raise IsaError(
                f"vta_config: the {name} buffer holds fewer than 2 elements; "
                f"raise LOG_{name}_BUFF_SIZE"
            )
        if log_depth > MEMOP_SRAM_ADDR_BITS:
            raise IsaError(
                f"vta_config: the {name} buffer depth 2^{log_depth} exceeds the 16-bit SRAM "
                f"address of LOAD/STORE; lower LOG_{name}_BUFF_SIZE"
            )
    uop_bits = cfg.log_acc_depth + cfg.uop_src_bits + cfg.log_wgt_depth
    if uop_bits > UOP_BITS:
        raise IsaError(
            f"vta_config: a micro-op needs {uop_bits} bits for its acc/inp/wgt indices, "
            f"more than the {UOP_BITS} a VTA micro-op has; use smaller buffers"
        )
    # Field layouts are checked by building them (encoding.layouts raises IsaError).
    from embedcsp.targets.vta.encoding import layouts

    layouts(cfg)


def _derived_names(cfg: VtaConfig) -> dict[str, int]:
    return {"BATCH": cfg.batch, "BLOCK_IN": cfg.block_in, "BLOCK_OUT": cfg.block_out}


def vta_from_dict(doc: dict, source: str) -> Accelerator:
    """A VTA accelerator from a parsed ISA file (docs/isa-files.md), validated."""
    unknown = set(doc) - {"accelerator", "vta_config", "intrinsic"}
    if unknown:
        raise IsaError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}")
    head = doc.get("accelerator", {})
    name = head.get("name", Path(source).stem)
    family = head.get("family")
    raw = dict(doc.get("vta_config", {}))
    if "LOG_BLOCK" in raw:  # pkg_config's shorthand for square blocks
        block = raw.pop("LOG_BLOCK")
        raw.setdefault("LOG_BLOCK_IN", block)
        raw.setdefault("LOG_BLOCK_OUT", block)
    raw.pop("TARGET", None)
    raw.pop("HW_VER", None)
    check_keys(raw, "vta_config", CONFIG_KEYS, CONFIG_KEYS, source)
    cfg = VtaConfig(**raw)
    try:
        validate_config(cfg)
    except IsaError as exc:
        raise IsaError(f"{source}: {exc}") from None
    intrinsic = doc.get("intrinsic")
    if not intrinsic or "statement" not in intrinsic:
        raise IsaError(f"{source}: [intrinsic] needs a 'statement', e.g. 'acc[b,o] += inp[b,i] * wgt[o,i]'")
    names = _derived_names(cfg)
    lanes = {}
    for dim, value in dict(intrinsic.get("lanes", {})).items():
        if isinstance(value, str):
            if value not in names:
                raise IsaError(f"{source}: lane {dim} = {value!r}: expected one of {', '.join(names)} or a number")
            value = names[value]
        lanes[dim] = value
    try:
        pattern = parse_pattern(intrinsic["statement"], lanes)
    except IsaError as exc:
        raise IsaError(f"{source}: {exc}") from None
    acc = Accelerator(name=name, family=family, pattern=pattern, config=cfg, source=source)
    _check_vta_pattern(acc, source)
    return acc


def _check_vta_pattern(acc: Accelerator, source: str) -> None:
    """VTA's GEMM core is fixed: acc[row,col] += inp[row,red] * wgt[col,red]."""
    p = acc.pattern
    if p.output.name != "acc" or {o.name for o in p.inputs} != {"inp", "wgt"}:
        raise IsaError(f"{source}: a VTA intrinsic must read 'inp' and 'wgt' into 'acc', got {p.statement()!r}")
    if p.inputs[0].name != "inp":
        raise IsaError(f"{source}: write the VTA intrinsic with inp first, as "
                       f"'acc[b,o] += inp[b,i] * wgt[o,i]'; got {p.statement()!r}")
    inp, wgt = p.operand("inp"), p.operand("wgt")
    if len(p.output.dims) != 2 or len(inp.dims) != 2 or len(wgt.dims) != 2:
        raise IsaError(f"{source}: VTA operands are 2-D tiles, got {p.statement()!r}")
    row, col = p.output.dims
    if inp.dims[0] != row or wgt.dims[0] != col or inp.dims[1] != wgt.dims[1]:
        raise IsaError(
            f"{source}: VTA computes acc[b,o] += inp[b,i] * wgt[o,i]; {p.statement()!r} has another shape"
        )
    red = inp.dims[1]
    cfg = acc.config
    expected = {row: cfg.batch, col: cfg.block_out, red: cfg.block_in}
    for dim, extent in expected.items():
        if p.extents[dim] != extent:
            raise IsaError(
                f"{source}: lane {dim} has extent {p.extents[dim]} but this vta_config gives {extent}"
            )


def vta_accelerator(cfg: VtaConfig | None = None, name: str = "vta") -> Accelerator:
    """The VTA family from Python: a config in, an accelerator out."""
    cfg = cfg or VtaConfig()
    doc = {
        "accelerator": {"name": name, "family": "vta"},
        "vta_config": cfg.as_dict(),
        "intrinsic": {
            "statement": "acc[b,o] += inp[b,i] * wgt[o,i]",
            "lanes": {"b": "BATCH", "o": "BLOCK_OUT", "i": "BLOCK_IN"},
        },
    }
    return vta_from_dict(doc, name)
