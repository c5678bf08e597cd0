"""The program bundle (docs/bundle-format.md): what another simulator needs to run a program.

    manifest.json  format, vta_config, operator, epilogue, tensors, dram_bytes, status,
                   provenance, plus fields of our own
    program.bin    insn_count x 16 bytes, ending with FINISH
    dram.bin       the DRAM image at start (dram_bytes long): micro-ops, packed inputs, zeroed outputs
    layout.npz     T_dram/T_index per input, T_dram of the logical shape per output
    FAILED         only when the bundle was written after a failed verification

`read_bundle` trusts nothing on disk: every field is type-checked, every size is
checked against the files before anything large is allocated, and every LOAD and
STORE is checked to stay inside dram.bin before anything runs. Anything wrong is a
`BadInput` (exit 2) naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.npyio import NpzFile

from embedcsp.einsum import einsum
from embedcsp.errors import BadInput
from embedcsp.layout import HostTransform
from embedcsp.operator import MAX_EXTENT, Operator, Tensor, operator_from_params
from embedcsp.pipeline import Compiled
from embedcsp.reference import (
    EPILOGUES,
    MAX_SHIFT,
    ROUNDINGS,
    Epilogue,
    random_inputs,
    reference_output,
)
from embedcsp.report import provenance
from embedcsp.targets.registry import family
from embedcsp.verify import Verification, compare

FORMAT = "embedcsp-bundle/1"
STATUSES = ("verified", "failed", "unverified")
FAILED_MARKER = "FAILED"

# Sanity caps applied before anything is allocated (docs/bundle-format.md, "Limits").

MAX_TENSOR_ELEMENTS = 1 << 30  # a logical tensor larger than this and than dram.bin is refused

_PARAMS = {
    "gemm": ("M", "N", "K"),
    "conv2d": ("N", "C", "H", "W", "K", "R", "S", "pad_h", "pad_w", "stride_h", "stride_w"),
}
# Said after "lacks the field ...", where a missing field has a likely story.
HINTS = {
    "dram_bytes": " (the exact size of dram.bin; bundles written before it was required lack it: "
                  "write the bundle again with `embedcsp solve ... --out`)",
    "status": " ('verified', 'failed' or 'unverified'; write the bundle again with `embedcsp solve ... --out`)",
}



# ---------------------------------------------------------------------------- writing

def bundle_status(verification: Verification | None) -> str:
    if verification is None:
        return "unverified"
    return "verified" if verification.ok else "failed"


def manifest(compiled: Compiled, verification: Verification | None, seed: int,
             transforms: list[HostTransform]) -> dict:
    op, program = compiled.operator, compiled.program
    doc = {
        "format": FORMAT,
        **family(compiled.accelerator.family).bundle.manifest_fields(compiled),
        "operator": operator_table(op),
        "epilogue": compiled.options.epilogue.manifest(),
        "program": "program.bin",
        "dram": "dram.bin",
        "dram_bytes": program.dram_size,
        "layout": "layout.npz",
        "tensors": {t.name: {"role": t.role, "dtype": _dtype_name(op, t, compiled.options.epilogue),
                             "shape": list(t.shape)} for t in op.tensors},
        "status": bundle_status(verification),
        "provenance": provenance(compiled, seed),
        # Fields of our own, for people reading the bundle.
        "accelerator": compiled.accelerator.name,
        "input_seed": seed,
        "embedding": compiled.embedding_summary(),
        "solver": compiled.report.as_dict(),
        "host_transform": [t.as_dict() for t in transforms],
    }
    if verification is not None:
        doc["verification"] = verification.as_dict()
    return doc


def _failed_text(verification: Verification, seed: int) -> str:
    return (
        "This bundle was written after its verification FAILED.\n\n"
        f"The functional model ran program.bin on random int8 inputs (seed {seed}) and\n"
        f"{verification.mismatches} of {verification.checked} output elements differed from the numpy\n"
        f"ground truth; the first: {verification.first_mismatch}.\n\n"
        "It is kept so the failure can be studied, not used. manifest.json says\n"
        '"status": "failed" and holds the verification record; `embedcsp run` still\n'
        "executes the bundle but warns on stderr.\n"
    )


def write_bundle(out: Path, compiled: Compiled, inputs: dict[str, np.ndarray], seed: int,
                 verification: Verification | None, transforms: list[HostTransform]) -> None:
    """Write the bundle; after a failed verification it is marked (status and a FAILED file)."""
    out = Path(out)
    op = compiled.operator
    table = operator_table(op)
    try:
        same = rebuild_operator(op.kind, op.param_dict, table["statement"], table["dims"],
                                table["shapes"]) == op
    except (BadInput, KeyError):
        same = False
    if not same:
        # A reader rebuilds a named operator from its parameters: they must mean what this
        # operator's access maps say.
        raise BadInput(f"{op.describe()}: a bundle records gemm or conv2d by its parameters, and this "
                       "operator's access maps say something else; build it with embedcsp.einsum")
    try:
        out.mkdir(parents=True, exist_ok=True)
        program_bin, image, layout = family(compiled.accelerator.family).bundle.files(compiled, inputs)
        (out / "program.bin").write_bytes(program_bin)
        image.tofile(out / "dram.bin")
        np.savez_compressed(out / "layout.npz", **layout)
        marker = out / FAILED_MARKER
        if verification is not None and not verification.ok:
            marker.write_text(_failed_text(verification, seed))
        elif marker.exists() or marker.is_symlink():
            marker.unlink()  # a marker left by an earlier bundle in this directory would lie
        doc = manifest(compiled, verification, seed, transforms)
        (out / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        raise BadInput(f"cannot write the bundle to {str(out)!r}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------- reading

@dataclass(frozen=True, eq=False)
class Bundle:
    path: Path
    manifest: dict
    family: str  # the manifest's isa
    config: Any  # the family's config, from the manifest
    operator: Operator
    epilogue: Epilogue
    program: Any  # the family's program as its functional model decoded program.bin
    dram: np.ndarray
    layout: dict[str, np.ndarray]
    status: str = "unverified"  # "verified", "failed" or "unverified", from the manifest

    @property
    def failed(self) -> bool:
        """Written after a failed verification (the manifest says so, or a FAILED file is there)."""
        return self.status == "failed" or (self.path / FAILED_MARKER).exists()

    @property
    def provenance(self) -> dict | None:
        return self.manifest.get("provenance")


def _what(value: Any) -> str:
    """A JSON value's type as a reader of the manifest would name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})" if len(repr(value)) < 30 else "a number"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) < 40 else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class _Manifest:
    """Typed access to manifest.json: every failure names the file and the field."""

    def __init__(self, file: Path, doc: dict):
        self.file, self.doc = file, doc

    def bad(self, msg: str) -> BadInput:
        return BadInput(f"{self.file}: {msg}")

    def get(self, table: Mapping, key: str, where: str) -> Any:
        if key not in table:
            hint = HINTS.get(where, "")
            raise self.bad(f"lacks the field {where!r}{hint}")
        return table[key]

    def obj(self, table: Mapping, key: str, where: str) -> dict:
        value = self.get(table, key, where)
        if not isinstance(value, dict):
            raise self.bad(f"{where} must be a JSON object, got {_what(value)}")
        return value

    def str_(self, table: Mapping, key: str, where: str) -> str:
        value = self.get(table, key, where)
        if not isinstance(value, str):
            raise self.bad(f"{where} must be a string, got {_what(value)}")
        return value

    def int_(self, table: Mapping, key: str, where: str, lo: int | None, hi: int | None = None) -> int:
        value = self.get(table, key, where)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.bad(f"{where} must be a whole number, got {_what(value)}")
        if lo is None:
            if hi is not None and value > hi:
                raise self.bad(f"{where} is beyond the supported {hi}")
            return value
        if value < lo or (hi is not None and value > hi):
            bounds = f"at least {lo}" if hi is None else f"within {lo}..{hi}"
            shown = value if abs(value) < 10**30 else "a huge number"
            raise self.bad(f"{where} must be {bounds}, got {shown}")
        return value


def _read_manifest(path: Path) -> dict:
    file = path / "manifest.json"
    if not file.exists():
        raise BadInput(f"{str(path)!r} has no manifest.json")
    try:
        doc = json.loads(file.read_bytes())
    except OSError as exc:
        raise BadInput(f"{file}: cannot read it ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, absurd nesting
        raise BadInput(f"{file} is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{file} must hold a JSON object, got {_what(doc)}")
    return doc


def operator_table(op: Operator) -> dict:
    """The manifest's `operator`: a named operator's parameters, and for every operator the
    statement, the dims' extents and the tensors' shapes, from which any simulator can
    compute the expected outputs (docs/bundle-format.md)."""
    named = {} if op.kind == "einsum" else op.param_dict
    return {"kind": op.kind, **named, "statement": op.statement(), "dims": dict(op.extents),
            "shapes": {t.name: list(t.shape) for t in op.tensors}}


def rebuild_operator(op_kind: str, params: dict, statement: str, dims: dict, shapes: dict) -> Operator:
    """What a manifest's operator table names; BadInput if its parts disagree."""
    if op_kind == "einsum":
        return einsum(statement, dims, {k: tuple(v) for k, v in shapes.items()})
    return operator_from_params(op_kind, params)


def _operator(m: _Manifest) -> Operator:
    table = m.obj(m.doc, "operator", "operator")
    kind = m.str_(table, "kind", "operator.kind")
    if kind not in (*_PARAMS, "einsum"):
        raise m.bad(f"unknown operator kind {kind!r}: expected 'gemm', 'conv2d' or 'einsum'")
    # Sizes below 1 (or pads below 0) are the operator's to refuse; nothing is beyond MAX_EXTENT.
    params = {k: m.int_(table, k, f"operator.{k}", None, MAX_EXTENT) for k in _PARAMS.get(kind, ())}
    statement = dims = shapes = None
    if kind == "einsum" or "statement" in table:  # bundles before statements were recorded lack it
        statement = m.str_(table, "statement", "operator.statement")
        dims = {k: m.int_(m.obj(table, "dims", "operator.dims"), k, f"operator.dims.{k}", 1, MAX_EXTENT)
                for k in m.obj(table, "dims", "operator.dims")}
        shapes_table = m.obj(table, "shapes", "operator.shapes")
        shapes = {}
        for name in shapes_table:
            value = shapes_table[name]
            if not (isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in value)):
                raise m.bad(f"operator.shapes.{name} must be a list of whole numbers")
            shapes[name] = value
    try:
        op = rebuild_operator(kind, params, statement or "", dims or {}, shapes or {})
    except BadInput as exc:
        raise m.bad(f"operator: {exc}") from None
    if statement is not None and operator_table(op) != {**table}:
        raise m.bad(f"operator: its statement, dims and shapes do not match {op.describe()} "
                    f"(the operator it names is {op.statement()!r})")
    return op


def _epilogue(m: _Manifest) -> Epilogue:
    """docs/bundle-format.md: `wrap`, `saturate`, `int32`, or `requant` with its shift and
    rounding (a requant without `rounding` is an older VTA bundle's: floor)."""
    table = m.obj(m.doc, "epilogue", "epilogue")
    kind = m.str_(table, "kind", "epilogue.kind")
    if kind in ("wrap", "saturate", "int32"):
        extra = sorted(set(table) - {"kind", "shift"})
        if extra:
            raise m.bad(f"epilogue {kind!r} takes no {', '.join(extra)}")
        if "shift" in table:
            m.int_(table, "shift", "epilogue.shift", 0, 0)
        return Epilogue(kind)
    if kind == "requant":
        rounding = m.str_(table, "rounding", "epilogue.rounding") if "rounding" in table else "floor"
        if rounding not in ROUNDINGS:
            raise m.bad(f"epilogue.rounding {rounding!r}: expected one of {', '.join(ROUNDINGS)}")
        return Epilogue("requant", m.int_(table, "shift", "epilogue.shift", 0, MAX_SHIFT[rounding]), rounding)
    raise m.bad(f"unknown epilogue {kind!r}: expected one of {', '.join(EPILOGUES)}")


def _dtype_name(op: Operator, t: Tensor, epilogue: Epilogue) -> str:
    """Inputs are int8; the output has the epilogue's type (int8, or int32 for `int32`)."""
    return np.dtype(epilogue.out_dtype).name if t is op.output else "int8"


def _tensors(m: _Manifest, op: Operator, epilogue: Epilogue) -> None:
    table = m.obj(m.doc, "tensors", "tensors")
    want = {t.name for t in op.tensors}
    if set(table) != want:
        raise m.bad(f"tensors lists {sorted(table)}, but {op.describe()} has tensors {sorted(want)}")
    for t in op.tensors:
        entry = m.obj(table, t.name, f"tensors.{t.name}")
        role = m.str_(entry, "role", f"tensors.{t.name}.role")
        dtype = m.str_(entry, "dtype", f"tensors.{t.name}.dtype")
        shape = m.get(entry, "shape", f"tensors.{t.name}.shape")
        if role != t.role:
            raise m.bad(f"tensors.{t.name}.role is {role!r}, but in {op.kind} it is {t.role!r}")
        want_dtype = _dtype_name(op, t, epilogue)
        if dtype != want_dtype:
            why = f"with the {epilogue.kind} epilogue" if t is op.output else "inputs are"
            raise m.bad(f"tensors.{t.name}.dtype is {dtype!r}; {why} {want_dtype!r}")
        exact = isinstance(shape, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in shape)
        if not exact or shape != list(t.shape):
            raise m.bad(f"tensors.{t.name}.shape is {json.dumps(shape)[:60]}, but {op.describe()} "
                        f"gives {list(t.shape)}")


def _status(m: _Manifest) -> str:
    status = m.str_(m.doc, "status", "status")
    if status not in STATUSES:
        raise m.bad(f"status {status!r} is not one of {', '.join(map(repr, STATUSES))}")
    record = m.doc.get("verification")
    if record is not None:
        if not isinstance(record, dict) or not isinstance(record.get("ok"), bool):
            raise m.bad(f"verification must be an object with a boolean 'ok', got {_what(record)}")
        said = "verified" if record["ok"] else "failed"
        if status != said:
            raise m.bad(f"status is {status!r}, but the verification record says ok={record['ok']}")
    elif status != "unverified":
        raise m.bad(f"status is {status!r}, but there is no verification record")
    if "provenance" in m.doc and not isinstance(m.doc["provenance"], dict):
        raise m.bad(f"provenance must be a JSON object, got {_what(m.doc['provenance'])}")
    return status


def _member(m: _Manifest, key: str, default: str | None = None) -> Path:
    """A file the manifest names: a plain file name, inside the bundle directory."""
    name = m.doc.get(key, default) if default is not None else m.get(m.doc, key, key)
    if not isinstance(name, str):
        raise m.bad(f"{key} must be a file name (a string), got {_what(name)}")
    plain = (name not in ("", ".", "..") and "/" not in name and "\\" not in name and "\x00" not in name
             and not Path(name).is_absolute())
    if not plain:
        raise m.bad(f"{key} {name!r} is not a plain file name inside the bundle directory")
    path = m.file.parent
    file = path / name
    try:
        if file.is_symlink() and file.resolve().parent != path.resolve():
            raise m.bad(f"{key} {name!r} is a symbolic link to outside the bundle directory")
        if not file.exists():
            raise BadInput(f"{file} is missing (the manifest's {key!r})")
        if not file.is_file():
            raise BadInput(f"{file} is not a regular file")
    except (OSError, RuntimeError) as exc:  # symlink loops, permissions
        raise BadInput(f"{file}: cannot use it ({exc})") from None
    return file


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def covered(length: int, windows: int, stride: int, width: int, pad: int) -> int:
    """How many of 0..length-1 lie in some window [p*stride - pad, +width), p in 0..windows-1.

    The rows (or columns) of conv2d's data that take part in at least one product; O(1).
    """
    if windows <= 0 or length <= 0:
        return 0
    if stride <= width:  # consecutive windows touch or overlap: one interval
        lo, hi = -pad, (windows - 1) * stride - pad + width
        return max(0, min(hi, length) - max(lo, 0))

    def overlap(p: int) -> int:
        a = p * stride - pad
        return max(0, min(a + width, length) - max(a, 0))

    # Disjoint windows: those meeting [0, length) are p_min..p_max; all but at most two
    # of them (cut by an edge) lie wholly inside.
    p_min = max(0, _ceil_div(pad - width + 1, stride))
    p_max = min(windows - 1, (length - 1 + pad) // stride)
    if p_max < p_min:
        return 0
    first = max(p_min, _ceil_div(pad, stride))
    last = min(p_max, (length - width + pad) // stride)
    if first > last:
        return sum(overlap(p) for p in range(p_min, p_max + 1))  # at most four windows
    edges = set(range(p_min, first)) | set(range(last + 1, p_max + 1))
    return (last - first + 1) * width + sum(overlap(p) for p in edges)


def participating(op: Operator, t: Tensor) -> int:
    """Elements of input `t` that meet a real (not padding) partner in some product: each of them
    must be somewhere in dram.bin. A lower bound where exactness would cost work (conv weights)."""
    if op.kind == "conv2d" and t.name == "data":
        prm, ext = op.param_dict, op.extents
        rows = covered(prm["H"], ext["p"], prm["stride_h"], prm["R"], prm["pad_h"])
        cols = covered(prm["W"], ext["q"], prm["stride_w"], prm["S"], prm["pad_w"])
        return prm["N"] * prm["C"] * rows * cols
    if op.kind != "gemm":
        return 0  # weights that meet only padding, or elements a stride skips, need not be stored
    return t.size


def _check_sizes(m: _Manifest, op: Operator, dram_bytes: int, out_bytes: int) -> None:
    """Refuse shapes the files cannot hold, before any tensor is allocated."""
    out = op.output
    if out.size * out_bytes > dram_bytes:
        raise m.bad(f"{op.describe()} has {out.size} output elements, but dram.bin has only "
                    f"{dram_bytes} bytes ({out_bytes} byte(s) per output element are needed)")
    for t in op.inputs:
        need = participating(op, t)
        if need > dram_bytes:
            raise m.bad(f"{op.describe()} reads {need} elements of {t.name}, but dram.bin has only "
                        f"{dram_bytes} bytes")
    for t in op.tensors:
        if t.size > max(MAX_TENSOR_ELEMENTS, dram_bytes):
            raise m.bad(f"tensor {t.name} of {op.describe()} has {t.size} elements, beyond this reader's "
                        f"limit of {MAX_TENSOR_ELEMENTS} (or dram.bin's size)")


def _read_dram(file: Path, dram_bytes: int) -> np.ndarray:
    size = file.stat().st_size
    if size != dram_bytes:
        cut = "truncated" if size < dram_bytes else "oversized"
        raise BadInput(f"{file} is {cut}: {size} bytes, but the manifest's dram_bytes is {dram_bytes}")
    try:
        dram = np.fromfile(file, dtype=np.uint8)
    except OSError as exc:
        raise BadInput(f"{file}: cannot read it ({exc.strerror or exc})") from None
    if len(dram) != dram_bytes:
        raise BadInput(f"{file} changed while it was read ({len(dram)} bytes, expected {dram_bytes})")
    return dram


def _npz_arrays(npz: NpzFile, limits: Mapping[str, int], source: str) -> dict[str, np.ndarray]:
    """Load the named members of an npz, refusing any whose header promises more than its limit
    in bytes before numpy allocates it (a small file can claim a huge array)."""
    members = {info.filename.removesuffix(".npy"): info.filename for info in npz.zip.infolist()}
    out = {}
    for name, limit in limits.items():
        with npz.zip.open(members[name]) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > limit:
            raise BadInput(f"{source}: {name} is a {list(shape)} {dtype} array ({nbytes} bytes), "
                           f"more than the {limit} bytes it can need")
        out[name] = npz[name]
    return out


def _layout(file: Path, op: Operator, dram_bytes: int, out_bytes: int = 1) -> dict[str, np.ndarray]:
    """layout.npz, checked: `<output>_dram` gives each output element's first byte; it holds
    `out_bytes` bytes (4 for an int32 output)."""
    need = [f"{t.name}_dram" for t in op.tensors] + [f"{t.name}_index" for t in op.inputs]
    limit = 8 * dram_bytes  # an int64 per dram.bin byte at most
    try:
        npz = np.load(file, allow_pickle=False)
        if not isinstance(npz, NpzFile):
            raise BadInput(f"{file} is not an npz archive (a zip of .npy arrays)")
        with npz:
            missing = [k for k in need if k not in npz.files]
            if missing:
                raise BadInput(f"{file} lacks {', '.join(missing)}")
            layout = _npz_arrays(npz, {k: limit for k in need}, str(file))
    except (BadInput, MemoryError):
        raise
    # numpy's header parser and zipfile raise many kinds (TokenError, SyntaxError, BadZipFile,
    # zlib.error, EOFError, ...); each of them means an unreadable file.
    except Exception as exc:  # noqa: BLE001
        raise BadInput(f"{file} is not a readable npz archive ({type(exc).__name__}: {str(exc)[:120]})") from None
    for k, arr in layout.items():
        if not isinstance(arr, np.ndarray):
            raise BadInput(f"{file}: {k} is not a .npy array")
        if not np.issubdtype(arr.dtype, np.integer):
            raise BadInput(f"{file}: {k} has dtype {arr.dtype}; layout arrays must be integers")
    for t in op.inputs:
        where, index = layout[f"{t.name}_dram"], layout[f"{t.name}_index"]
        if where.ndim != 1 or index.ndim != 1 or where.shape != index.shape:
            raise BadInput(f"{file}: {t.name}_dram {list(where.shape)} and {t.name}_index {list(index.shape)} "
                           "must be 1-D arrays of one length")
        _in_range(file, f"{t.name}_dram", where, dram_bytes, "byte offsets outside dram.bin")
        _in_range(file, f"{t.name}_index", index, t.size,
                  f"flat indices outside {t.name}'s logical shape {list(t.shape)}")
    t = op.output
    if layout[f"{t.name}_dram"].shape != t.shape:
        raise BadInput(f"{file}: {t.name}_dram has shape {list(layout[f'{t.name}_dram'].shape)}, expected "
                       f"{t.name}'s logical shape {list(t.shape)}")
    _in_range(file, f"{t.name}_dram", layout[f"{t.name}_dram"], dram_bytes - (out_bytes - 1),
              "byte offsets outside dram.bin")
    layout = {k: arr.astype(np.int64) for k, arr in layout.items()}
    # Each listed byte holds one element: no byte twice, within a tensor or across tensors.
    held = np.zeros(dram_bytes, bool)
    listed = 0
    for t in op.tensors:
        where = layout[f"{t.name}_dram"].reshape(-1)
        for byte in range(out_bytes if t is op.output else 1):
            held[where + byte] = True
            listed += where.size
    if int(held.sum()) != listed:
        raise BadInput(f"{file}: some dram.bin byte is listed for two tensor elements")
    return layout


def _in_range(file: Path, key: str, arr: np.ndarray, end: int, what: str) -> None:
    if arr.size and (arr.min() < 0 or arr.max() >= end):
        raise BadInput(f"{file}: {key} has {what} (values {int(arr.min())}..{int(arr.max())}, "
                       f"allowed 0..{end - 1})")


def read_bundle(path: Path | str) -> Bundle:
    """Load and check a bundle; anything malformed is a BadInput naming the file."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"{str(path)!r} is not a bundle directory")
    doc = _read_manifest(path)
    m = _Manifest(path / "manifest.json", doc)
    fmt = m.get(doc, "format", "format")
    if fmt != FORMAT:
        raise m.bad(f"format is {json.dumps(fmt)[:60]}, expected {FORMAT!r}")
    isa = m.get(doc, "isa", "isa")
    try:
        fam = family(isa if isinstance(isa, str) else repr(isa))
    except BadInput as exc:
        raise m.bad(f"isa {json.dumps(isa)[:60]}: {exc}") from None
    cfg = fam.bundle.read_config(m)
    op = _operator(m)
    epilogue = _epilogue(m)
    if epilogue.name not in fam.epilogues:
        raise m.bad(f"epilogue {epilogue.name!r} is not one the {fam.name} family applies "
                    f"({', '.join(fam.epilogues)})")
    _tensors(m, op, epilogue)
    status = _status(m)
    dram_bytes = m.int_(doc, "dram_bytes", "dram_bytes", 1)
    program_file, dram_file = _member(m, "program"), _member(m, "dram")
    layout_file = _member(m, "layout", "layout.npz")
    out_bytes = np.dtype(epilogue.out_dtype).itemsize
    _check_sizes(m, op, dram_bytes, out_bytes)
    dram = _read_dram(dram_file, dram_bytes)
    program = fam.bundle.read_program(m, program_file, cfg, dram_bytes)
    layout = _layout(layout_file, op, dram_bytes, out_bytes)
    return Bundle(path, doc, isa, cfg, op, epilogue, program, dram, layout, status)


# ---------------------------------------------------------------------------- running

@dataclass(frozen=True, eq=False)
class BundleRun:
    """One execution of a bundle: the verdict and every tensor involved, in logical shapes."""

    verification: Verification
    inputs: dict[str, np.ndarray]  # int8, as fed in
    outputs: dict[str, np.ndarray]  # int8, read back through layout.npz
    expected: dict[str, np.ndarray]  # the numpy ground truth
    seed: int | None  # the random-input seed, None when the inputs were given

    @property
    def ok(self) -> bool:
        return self.verification.ok


def check_inputs(op: Operator, arrays: Mapping[str, Any], source: str = "inputs") -> dict[str, np.ndarray]:
    """The operator's input tensors from user data: names, logical shapes, int8 values.

    Integer arrays of another dtype are accepted only when every value fits int8.
    """
    want = {t.name: t for t in op.inputs}
    names = ", ".join(f"{t.name} {list(t.shape)}" for t in op.inputs)
    missing = [n for n in want if n not in arrays]
    extra = sorted(str(n) for n in arrays if n not in want)
    if missing:
        raise BadInput(f"{source} lacks {', '.join(missing)}; {op.describe()} takes {names}")
    if extra:
        raise BadInput(f"{source} has {', '.join(extra)}, which {op.describe()} does not take (it takes {names})")
    out = {}
    for name, t in want.items():
        arr = np.asarray(arrays[name])
        if arr.shape != t.shape:
            raise BadInput(f"{source}: {name} has shape {list(arr.shape)}, expected {list(t.shape)}")
        if arr.dtype != np.int8:
            if arr.dtype.kind not in "iu":
                raise BadInput(f"{source}: {name} has dtype {arr.dtype}; expected int8 "
                               "(or integers within -128..127)")
            if arr.size and (arr.min() < -128 or arr.max() > 127):
                raise BadInput(f"{source}: {name} has dtype {arr.dtype} with values "
                               f"{int(arr.min())}..{int(arr.max())}, outside int8's -128..127")
        out[name] = np.ascontiguousarray(arr, dtype=np.int8)
    return out


def load_inputs(file: Path, op: Operator) -> dict[str, np.ndarray]:
    """`--inputs FILE.npz`: one array per input tensor of the operator, checked by `check_inputs`."""
    file = Path(file)
    if not file.is_file():
        raise BadInput(f"--inputs {str(file)!r} is not a file")
    source = f"--inputs {file}"
    try:
        npz = np.load(file, allow_pickle=False)
        if not isinstance(npz, NpzFile):
            raise BadInput(f"{source} is not an npz archive (write it with numpy.savez)")
        with npz:
            want = {t.name: t for t in op.inputs}
            # Values may come as any integer dtype: up to 8 bytes an element.
            arrays: dict[str, Any] = _npz_arrays(
                npz, {n: 8 * want[n].size for n in npz.files if n in want}, source)
            # The output's name is skipped, so a --dump file can be fed back as --inputs.
            arrays.update({n: None for n in npz.files if n not in want and n != op.output.name})
    except (BadInput, MemoryError):
        raise
    # numpy's header parser and zipfile raise many kinds (TokenError, SyntaxError, BadZipFile,
    # zlib.error, EOFError, ...); each of them means an unreadable file.
    except Exception as exc:  # noqa: BLE001
        raise BadInput(f"{source} is not a readable npz archive "
                       f"({type(exc).__name__}: {str(exc)[:120]})") from None
    return check_inputs(op, arrays, source)


def run_bundle(bundle: Bundle, seed: int = 1, inputs: Mapping[str, Any] | None = None) -> BundleRun:
    """Run the bundle on `inputs` (or random int8 data from `seed`) and compare with numpy."""
    start = time.perf_counter()
    op = bundle.operator
    if inputs is not None:
        given, used_seed = check_inputs(op, inputs), None
    else:
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise BadInput(f"seed must be a whole number >= 0, got {seed!r}")
        given, used_seed = random_inputs(op, int(seed)), int(seed)
    dram = bundle.dram.copy()
    for t in op.inputs:
        where, index = bundle.layout[f"{t.name}_dram"], bundle.layout[f"{t.name}_index"]
        dram[where] = given[t.name].reshape(-1)[index].view(np.uint8)
    out_dram = bundle.layout[f"{op.output.name}_dram"]
    for byte in range(np.dtype(bundle.epilogue.out_dtype).itemsize):
        dram[out_dram.reshape(-1) + byte] = 0
    got, counters = family(bundle.family).bundle.run_image(bundle, dram, out_dram)
    want = reference_output(op, given, bundle.epilogue)
    verification = compare(op, got, want, counters, time.perf_counter() - start)
    name = op.output.name
    return BundleRun(verification, given, {name: got}, {name: want}, used_seed)


def write_dump(file: Path, run: BundleRun) -> None:
    """`--dump FILE.npz`: the outputs (int8, logical shapes) and the inputs that produced them."""
    file = Path(file)
    try:
        with open(file, "wb") as fh:  # a file object: numpy would append .npz to a bare name
            np.savez_compressed(fh, **run.inputs, **run.outputs)
    except OSError as exc:
        raise BadInput(f"cannot write --dump {str(file)!r}: {exc.strerror or exc}") from None


def check_dump_target(file: Path) -> None:
    """Refuse a --dump path that cannot be written, before running anything."""
    file = Path(file)
    if file.is_dir():
        raise BadInput(f"--dump {str(file)!r} is a directory; give a file name")
    parent = file.parent if str(file.parent) else Path(".")
    if not parent.is_dir():
        raise BadInput(f"--dump {str(file)!r}: the directory {str(parent)!r} does not exist")
