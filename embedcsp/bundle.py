"""The program bundle (design.md section 4): what any VTA simulator can run.

    manifest.json  format, vta_config, operator, epilogue, tensors, plus our own fields
    program.bin    insn_count x 16 bytes, ending with FINISH
    dram.bin       the DRAM image at start: micro-ops, packed inputs, zeroed outputs
    layout.npz     T_dram/T_index per input, T_dram of the logical shape per output
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedcsp.accelerator import (
    CONFIG_KEYS,
    VtaConfig,
    validate_config,
    vta_accelerator,
)
from embedcsp.codegen import dram_image, layout_arrays
from embedcsp.encoding import FinishInsn, decode_program, encode_program
from embedcsp.errors import BadInput, EmbedcspError
from embedcsp.layout import HostTransform
from embedcsp.operator import Operator, operator_from_params
from embedcsp.pipeline import Compiled
from embedcsp.reference import Epilogue, random_inputs, reference_output
from embedcsp.verify import Verification, compare, execute_image

FORMAT = "embedcsp-bundle/1"


def manifest(compiled: Compiled, verification: Verification | None, seed: int,
             transforms: list[HostTransform]) -> dict:
    op, program = compiled.operator, compiled.program
    tiling = compiled.plan.tiling
    doc = {
        "format": FORMAT,
        "isa": "vta",
        "vta_config": compiled.accelerator.vta.as_dict(),
        "operator": {"kind": op.kind, **op.param_dict},
        "epilogue": compiled.options.epilogue.manifest(),
        "program": "program.bin",
        "insn_count": len(program.insns),
        "dram": "dram.bin",
        "layout": "layout.npz",
        "tensors": {t.name: {"role": t.role, "dtype": "int8", "shape": list(t.shape)} for t in op.tensors},
        # Fields of our own, for people reading the bundle.
        "accelerator": compiled.accelerator.name,
        "input_seed": seed,
        "embedding": compiled.embedding.summary(),
        "solver": compiled.report.as_dict(),
        "plan": {"rows": compiled.plan.n_rows, "cols": compiled.plan.n_cols, "reds": compiled.plan.n_reds,
                 "tile": {"rows": tiling.rows, "cols": tiling.cols, "reds": tiling.reds},
                 "outer": tiling.outer, "slots": {"inp": tiling.inp_slots, "wgt": tiling.wgt_slots,
                                                  "acc": tiling.acc_slots}},
        "regions": {name: {"offset": r.offset, "size": r.size} for name, r in program.regions.items()},
        "host_transform": [t.as_dict() for t in transforms],
    }
    if verification is not None:
        doc["verification"] = verification.as_dict()
    return doc


def write_bundle(out: Path, compiled: Compiled, inputs: dict[str, np.ndarray], seed: int,
                 verification: Verification | None, transforms: list[HostTransform]) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        program = compiled.program
        (out / "program.bin").write_bytes(encode_program(list(program.insns), program.config))
        dram_image(program, inputs).tofile(out / "dram.bin")
        shapes = {t.name: t.shape for t in compiled.operator.tensors}
        np.savez_compressed(out / "layout.npz", **layout_arrays(program, shapes))
        doc = manifest(compiled, verification, seed, transforms)
        (out / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        raise BadInput(f"cannot write the bundle to {str(out)!r}: {exc.strerror or exc}") from None


@dataclass(frozen=True, eq=False)
class Bundle:
    path: Path
    manifest: dict
    config: VtaConfig
    operator: Operator
    epilogue: Epilogue
    insns: list
    dram: np.ndarray
    layout: dict[str, np.ndarray]


def read_bundle(path: Path) -> Bundle:
    """Load and sanity-check a bundle; anything malformed is a BadInput."""
    if not path.is_dir():
        raise BadInput(f"{str(path)!r} is not a bundle directory")
    try:
        doc = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise BadInput(f"{str(path)!r} has no manifest.json") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}/manifest.json is not valid JSON ({exc})") from None
    if doc.get("format") != FORMAT:
        raise BadInput(f"{path}/manifest.json has format {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("isa") != "vta":
        raise BadInput(f"{path}: isa {doc.get('isa')!r} is not supported; only 'vta' bundles run")
    try:
        raw_cfg = doc["vta_config"]
        cfg = VtaConfig(**{k: int(raw_cfg[k]) for k in CONFIG_KEYS})
        validate_config(cfg)
        op_doc = dict(doc["operator"])
        op = operator_from_params(op_doc.pop("kind"), {k: int(v) for k, v in op_doc.items()})
        ep = doc["epilogue"]
        epilogue = Epilogue(ep["kind"], int(ep.get("shift", 0)))
        if epilogue.kind not in ("wrap", "requant"):
            raise BadInput(f"{path}: unknown epilogue {epilogue.kind!r}")
        program_bytes = (path / doc["program"]).read_bytes()
        insns = decode_program(program_bytes, cfg)
        if len(insns) != int(doc["insn_count"]):
            raise BadInput(f"{path}: program.bin has {len(insns)} instructions, manifest says {doc['insn_count']}")
        if not insns or not isinstance(insns[-1], FinishInsn):
            raise BadInput(f"{path}: program.bin does not end with FINISH")
        dram = np.fromfile(path / doc["dram"], dtype=np.uint8)
        with np.load(path / doc.get("layout", "layout.npz")) as npz:
            layout = {k: npz[k] for k in npz.files}
    except EmbedcspError:
        raise
    except (KeyError, TypeError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise BadInput(f"{path}: malformed bundle ({type(exc).__name__}: {exc})") from None
    for t in op.tensors:
        need = [f"{t.name}_dram"] + ([f"{t.name}_index"] if t.role == "input" else [])
        missing = [k for k in need if k not in layout]
        if missing:
            raise BadInput(f"{path}: layout.npz lacks {', '.join(missing)}")
        if layout[f"{t.name}_dram"].size and (layout[f"{t.name}_dram"].max() >= len(dram)
                                             or layout[f"{t.name}_dram"].min() < 0):
            raise BadInput(f"{path}: layout.npz points outside dram.bin for {t.name}")
    return Bundle(path, doc, cfg, op, epilogue, insns, dram, layout)


def run_bundle(bundle: Bundle, seed: int) -> Verification:
    """Fill the bundle's inputs with fresh random data, run it, compare with numpy."""
    start = time.perf_counter()
    op = bundle.operator
    inputs = random_inputs(op, seed)
    dram = bundle.dram.copy()
    for t in op.inputs:
        where, index = bundle.layout[f"{t.name}_dram"], bundle.layout[f"{t.name}_index"]
        dram[where] = inputs[t.name].reshape(-1)[index].view(np.uint8)
    out_dram = bundle.layout[f"{op.output.name}_dram"]
    if out_dram.shape != op.output.shape:
        raise BadInput(f"{bundle.path}: {op.output.name}_dram has shape {out_dram.shape}, "
                       f"expected {op.output.shape}")
    dram[out_dram.reshape(-1)] = 0
    pattern = vta_accelerator(bundle.config).pattern
    got, counters = execute_image(bundle.insns, dram, bundle.config, pattern, out_dram)
    want = reference_output(op, inputs, bundle.epilogue)
    return compare(op, got, want, counters, time.perf_counter() - start)
