"""Gemmini's part of the program bundle (docs/gemmini.md section 7): its manifest fields, the
program.bin it writes (24 bytes a command: funct7, rs1, rs2 as little-endian u64), and the
checks of a program.bin read back before anything runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedcsp.errors import BadInput, IsaError
from embedcsp.targets.gemmini.codegen import dram_image, layout_arrays
from embedcsp.targets.gemmini.commands import ConfigLd, ConfigSt
from embedcsp.targets.gemmini.config import CONFIG_KEYS, GemminiConfig
from embedcsp.targets.gemmini.decode import ENTRY_BYTES, Entries, field, read_entries

MAX_DRAM_BASE = 1 << 48  # a main-memory address: anything beyond is no Rocket physical address


@dataclass(frozen=True, eq=False)
class BundleProgram:
    """program.bin as the model's reader decoded it, and where dram.bin sits in memory."""

    entries: Entries
    dram_base: int

    def __len__(self) -> int:
        return len(self.entries)


def manifest_fields(compiled) -> dict:
    """The manifest keys only a Gemmini bundle has."""
    program, plan = compiled.program, compiled.plan
    t = plan.tiling
    return {
        "isa": "gemmini",
        "gemmini_config": compiled.accelerator.config.as_dict(),
        "dram_base": program.dram_base,
        "command_count": len(program),
        "plan": {"dataflow": t.dataflow, "chunks": [plan.rows.n, plan.cols.n, plan.reds.n],
                 "tile": [t.rows, t.cols, t.reds], "outer": t.outer, "slots": t.slots,
                 "os_chain": t.chain},
        "regions": {program.tensors[name]: {"offset": r.offset, "size": r.size,
                                            "shape": [program.axes[name][0].total,
                                                      program.axes[name][1].total]}
                    for name, r in program.regions.items()},
    }


def files(compiled, inputs: dict[str, np.ndarray]) -> tuple[bytes, np.ndarray, dict[str, np.ndarray]]:
    """(program.bin, dram.bin, layout.npz arrays) of a compiled program on `inputs`."""
    program = compiled.program
    shapes = {t.name: t.shape for t in compiled.operator.tensors}
    return program.to_bytes(), dram_image(program, inputs), layout_arrays(program, shapes)


def read_config(m) -> GemminiConfig:
    """The manifest's gemmini_config, every value checked (`m` is bundle.py's typed reader)."""
    raw = m.obj(m.doc, "gemmini_config", "gemmini_config")
    unknown = sorted(set(raw) - set(CONFIG_KEYS))
    if unknown:
        raise m.bad(f"gemmini_config has unknown key(s) {', '.join(map(repr, unknown))}")
    values = {}
    for key in CONFIG_KEYS:
        if key in ("elem_t", "acc_t"):
            values[key] = m.str_(raw, key, f"gemmini_config.{key}")
        else:
            values[key] = m.int_(raw, key, f"gemmini_config.{key}", 1, 1 << 26)
    try:
        return GemminiConfig(**values)
    except IsaError as exc:
        raise m.bad(str(exc)) from None


def read_program(m, file: Path, cfg: GemminiConfig, dram_bytes: int) -> BundleProgram:
    """program.bin decoded by the model's reader; every mvin and mvout inside dram.bin."""
    count = m.int_(m.doc, "command_count", "command_count", 1)
    base = m.int_(m.doc, "dram_base", "dram_base", 1, MAX_DRAM_BASE)
    size = file.stat().st_size
    if size % ENTRY_BYTES:
        raise BadInput(f"{file} is {size} bytes, not a whole number of {ENTRY_BYTES}-byte commands")
    if size // ENTRY_BYTES != count:
        raise BadInput(f"{file} holds {size // ENTRY_BYTES} commands, but the manifest's "
                       f"command_count is {count}")
    try:
        entries = read_entries(file.read_bytes())
    except OSError as exc:
        raise BadInput(f"{file}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise BadInput(f"{file}: {exc}") from None
    _check_dram_ranges(file, entries, cfg, base, dram_bytes)
    return BundleProgram(entries, base)


def _check_dram_ranges(file: Path, en: Entries, cfg: GemminiConfig, base: int, dram_bytes: int) -> None:
    """Every byte an mvin reads or an mvout writes lies inside dram.bin, with the strides of the
    config_ld / config_st in force at that command; a move before its config is refused too."""
    n = len(en)
    pcs = np.arange(n)
    funct = en.funct.astype(np.int64)
    addr, rows, cols = field(en.rs2, 31, 0), field(en.rs2, 63, 48), field(en.rs2, 47, 32)
    dram = en.rs1.astype(np.uint64)
    checks = []
    for slot in (0, 1, 2):
        cfgs = sorted((pc, c) for pc, c in en.records.items() if isinstance(c, ConfigLd) and c.slot == slot)
        sel = pcs[funct == {0: 2, 1: 1, 2: 14}[slot]]
        checks.append((f"mvin (load slot {slot})", sel, cfgs, lambda c, sel: (
            np.where((addr[sel] >> 31) & 1 == 1, np.where(c.shrink, cfg.elem_bytes, cfg.acc_bytes),
                     cfg.elem_bytes))))
    st_cfgs = sorted((pc, c) for pc, c in en.records.items() if isinstance(c, ConfigSt))
    checks.append(("mvout", pcs[funct == 3], st_cfgs, lambda c, sel: np.where(
        ((addr[sel] >> 31) & 1 == 1) & ((addr[sel] >> 29) & 1 == 1), cfg.acc_bytes, cfg.elem_bytes)))
    for what, sel, cfgs, esz_of in checks:
        if not len(sel):
            continue
        at = np.array([pc for pc, _ in cfgs], np.int64)
        which = np.searchsorted(at, sel) - 1  # the config in force: the last one before
        if (which < 0).any():
            pc = int(sel[np.flatnonzero(which < 0)[0]])
            raise BadInput(f"{file}: command {pc} ({what}) comes before any configuration of it")
        for k, (_, c) in enumerate(cfgs):
            part = sel[which == k]
            if not len(part):
                continue
            nz = dram[part] != 0  # address 0 writes zeros without reading memory
            part = part[nz]
            esz = esz_of(c, part)
            lo = dram[part].astype(np.float64) - base
            hi = lo + (rows[part] - 1) * float(c.stride) + cols[part] * esz
            bad = (lo < 0) | (hi > dram_bytes)
            if bad.any():
                pc = int(part[np.flatnonzero(bad)[0]])
                raise BadInput(f"{file}: command {pc} ({what}) moves main memory outside dram.bin, "
                               f"which sits at [{base:#x}, {base + dram_bytes:#x})")


def run_image(bundle, dram: np.ndarray, out_dram: np.ndarray):
    """(the output through out_dram, counters): a read bundle run on a filled DRAM image."""
    from embedcsp.targets.gemmini.batch import run_entries
    from embedcsp.targets.gemmini.codegen import read_output

    final, counters = run_entries(bundle.program.entries, dram, bundle.program.dram_base, bundle.config)
    out_bytes = 4 if bundle.epilogue.kind == "int32" else 1
    return read_output(final, out_dram, out_bytes), counters
