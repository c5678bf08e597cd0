"""Bundles at the edges: every kind of damage is one line and exit 2, user inputs and dumps are
exact against numpy, a bundle from a failed verification says so, provenance is recorded."""

from __future__ import annotations

import io
import itertools
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedcsp.accelerator import load_accelerator
from embedcsp.bundle import FORMAT, covered, read_bundle, run_bundle, write_bundle
from embedcsp.errors import BadInput
from embedcsp.operator import conv2d, gemm
from embedcsp.pipeline import Options, solve_and_verify
from embedcsp.reference import Epilogue
from embedcsp.targets.vta.execute import verify_program

ACC = load_accelerator()
RUNNER = CliRunner()


def cli(*args: str):
    from embedcsp.cli import app

    result = RUNNER.invoke(app, list(args))
    # Never a traceback: the command ends by typer.Exit, not by an exception of its own.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def assert_bad(result, fragment: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def gemm_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gemm") / "b"
    o = solve_and_verify(gemm(20, 24, 40), ACC, Options(), seed=0)
    write_bundle(out, o.compiled, o.inputs, 0, o.verification, o.transforms)
    return out


@pytest.fixture
def bundle(gemm_bundle, tmp_path) -> Path:
    """A fresh copy to damage."""
    return Path(shutil.copytree(gemm_bundle, tmp_path / "b"))


def edit(b: Path, change) -> None:
    doc = json.loads((b / "manifest.json").read_text())
    doc = change(doc)
    (b / "manifest.json").write_text(json.dumps(doc))


def setter(*keys_and_value):
    *keys, value = keys_and_value

    def change(doc):
        target = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
        return doc
    return change


def deleter(*keys):
    def change(doc):
        target = doc
        for k in keys[:-1]:
            target = target[k]
        del target[keys[-1]]
        return doc
    return change


# ---------------------------------------------------------------- manifest.json

def _grow_m(doc, m):
    """A consistent manifest for a far larger GEMM than dram.bin can hold."""
    doc["operator"]["M"] = doc["operator"]["dims"]["m"] = m
    doc["operator"]["shapes"]["A"][0] = doc["operator"]["shapes"]["C"][0] = m
    doc["tensors"]["A"]["shape"][0] = doc["tensors"]["C"]["shape"][0] = m
    return doc


MANIFEST_DAMAGE = [
    # the document itself
    ("a JSON list", lambda d: [d], "must hold a JSON object, got a list"),
    ("a JSON number", lambda d: 12, "must hold a JSON object, got a number"),
    ("a JSON string", lambda d: "embedcsp", "must hold a JSON object, got a string"),
    ("other format", setter("format", "embedcsp-bundle/9"), "expected 'embedcsp-bundle/1'"),
    ("other isa", setter("isa", "mychip"), "unknown accelerator family 'mychip'"),
    ("gemmini isa on a VTA bundle", setter("isa", "gemmini"), "lacks the field 'gemmini_config'"),
    # fields of the wrong JSON type
    ("insn_count as string", setter("insn_count", "12"), "insn_count must be a whole number, got a string"),
    ("dram_bytes as float", setter("dram_bytes", 4096.0), "dram_bytes must be a whole number"),
    ("M as string", setter("operator", "M", "20"), "operator.M must be a whole number, got a string"),
    ("bool for int", setter("vta_config", "LOG_BATCH", True),
     "vta_config.LOG_BATCH must be a whole number, got a boolean"),
    ("list for dict", setter("operator", [20, 24, 40]), "operator must be a JSON object, got a list"),
    ("null epilogue", setter("epilogue", None), "epilogue must be a JSON object, got null"),
    ("null shift", setter("epilogue", {"kind": "requant", "shift": None}),
     "epilogue.shift must be a whole number, got null"),
    ("tensors as list", setter("tensors", ["A", "B", "C"]), "tensors must be a JSON object"),
    ("program as number", setter("program", 7), "program must be a file name (a string)"),
    ("status as bool", setter("status", True), "status must be a string"),
    ("provenance as list", setter("provenance", []), "provenance must be a JSON object"),
    # missing fields
    ("no program", deleter("program"), "lacks the field 'program'"),
    ("no operator", deleter("operator"), "lacks the field 'operator'"),
    ("no LOG_BLOCK_IN", deleter("vta_config", "LOG_BLOCK_IN"), "lacks the field 'vta_config.LOG_BLOCK_IN'"),
    ("no K", deleter("operator", "K"), "lacks the field 'operator.K'"),
    ("no epilogue kind", deleter("epilogue", "kind"), "lacks the field 'epilogue.kind'"),
    ("no dram_bytes", deleter("dram_bytes"), "lacks the field 'dram_bytes'"),
    ("no status", deleter("status"), "lacks the field 'status'"),
    ("no insn_count", deleter("insn_count"), "lacks the field 'insn_count'"),
    # epilogues
    ("unknown epilogue", setter("epilogue", {"kind": "relu"}), "unknown epilogue 'relu'"),
    ("epilogue VTA cannot apply", setter("epilogue", {"kind": "int32"}),
     "epilogue 'int32' is not one the vta family applies"),
    ("requant rounding VTA cannot apply",
     setter("epilogue", {"kind": "requant", "shift": 3, "rounding": "nearest_even"}),
     "epilogue 'requant/nearest_even' is not one the vta family applies"),
    ("unknown rounding", setter("epilogue", {"kind": "requant", "shift": 3, "rounding": "up"}),
     "epilogue.rounding 'up': expected one of floor, nearest_even"),
    ("wrap with a rounding", setter("epilogue", {"kind": "wrap", "rounding": "floor"}),
     "epilogue 'wrap' takes no rounding"),
    ("shift out of range", setter("epilogue", {"kind": "requant", "shift": 40}),
     "epilogue.shift must be within 0..15"),
    ("shift that hardware reads as a left shift", setter("epilogue", {"kind": "requant", "shift": 16}),
     "epilogue.shift must be within 0..15"),
    # shapes
    ("negative M", setter("operator", "M", -3), "M must be at least 1"),
    ("zero K", setter("operator", "K", 0), "K must be at least 1"),
    ("huge N", setter("operator", "N", 10**40), "operator.N is beyond the supported"),
    ("unknown kind", setter("operator", "kind", "matmul"), "unknown operator kind 'matmul'"),
    ("statement that disagrees", setter("operator", "statement", "C[m,n] += A[m,k] * B[n,k]"),
     "its statement, dims and shapes do not match gemm"),
    ("dims that disagree", setter("operator", "dims", "m", 3), "do not match gemm"),
    ("einsum without a statement", lambda d: {**d, "operator": {"kind": "einsum"}},
     "lacks the field 'operator.statement'"),
    ("einsum whose statement is not affine", lambda d: {**d, "operator": {
        "kind": "einsum", "statement": "C[m,n] += A[m,k*k] * B[k,n]", "dims": {"m": 20, "n": 24, "k": 40},
        "shapes": {}}}, "is not affine in the dims"),
    ("tensors beyond dram.bin", lambda d: _grow_m(d, 1 << 20), "dram.bin has only"),
    ("tensor shape disagrees", setter("tensors", "C", "shape", [20, 25]), "tensors.C.shape is [20, 25]"),
    ("float shape", setter("tensors", "C", "shape", [20.0, 24]), "tensors.C.shape is [20.0, 24]"),
    ("tensor names disagree", deleter("tensors", "B"), "tensors lists ['A', 'C']"),
    ("tensor dtype", setter("tensors", "A", "dtype", "int16"), "inputs are 'int8'"),
    # vta_config
    ("config as string", setter("vta_config", "LOG_BLOCK_IN", "4"),
     "vta_config.LOG_BLOCK_IN must be a whole number"),
    ("config huge", setter("vta_config", "LOG_UOP_BUFF_SIZE", 1000),
     "vta_config.LOG_UOP_BUFF_SIZE must be within 0..24"),
    ("config invalid", setter("vta_config", "LOG_INP_WIDTH", 4), "only int8 inputs/weights"),
    ("config too deep", setter("vta_config", "LOG_INP_BUFF_SIZE", 24), "exceeds the 16-bit SRAM address"),
    ("config unknown key", setter("vta_config", "LOG_FOO", 1), "unknown key(s) 'LOG_FOO'"),
    # status and its record
    ("unknown status", setter("status", "fine"), "status 'fine' is not one of"),
    ("status disagrees", setter("status", "failed"),
     "status is 'failed', but the verification record says ok=True"),
    ("unverified with a record", setter("status", "unverified"), "status is 'unverified'"),
    # files the manifest names
    ("absolute path", setter("program", "/etc/passwd"), "is not a plain file name inside the bundle"),
    ("dot dot", setter("dram", "../b/dram.bin"), "is not a plain file name inside the bundle"),
    ("subdirectory", setter("layout", "sub/layout.npz"), "is not a plain file name inside the bundle"),
    ("dot", setter("program", "."), "is not a plain file name inside the bundle"),
    ("empty name", setter("dram", ""), "is not a plain file name inside the bundle"),
    ("missing file", setter("program", "nothing.bin"), "nothing.bin is missing"),
]


@pytest.mark.parametrize("what,change,fragment", MANIFEST_DAMAGE, ids=[c[0] for c in MANIFEST_DAMAGE])
def test_damaged_manifest_is_exit_2(bundle, what, change, fragment):
    edit(bundle, change)
    assert_bad(cli("run", str(bundle)), fragment)


def test_manifest_not_json_or_missing(bundle, tmp_path):
    (bundle / "manifest.json").write_text('{"format": ')
    assert_bad(cli("run", str(bundle)), "is not valid JSON")
    (bundle / "manifest.json").write_bytes(b"\xff\xfe\x00garbage")
    assert_bad(cli("run", str(bundle)), "is not valid JSON")
    (bundle / "manifest.json").write_text("[" * 100000 + "]" * 100000)
    assert_bad(cli("run", str(bundle)), "manifest.json")
    (bundle / "manifest.json").unlink()
    assert_bad(cli("run", str(bundle)), "has no manifest.json")
    assert_bad(cli("run", str(tmp_path / "nowhere")), "is not a bundle directory")


def test_symlinks_out_of_the_bundle_are_refused(bundle, tmp_path):
    outside = tmp_path / "outside.bin"
    shutil.copy(bundle / "program.bin", outside)
    (bundle / "evil.bin").symlink_to(outside)
    edit(bundle, setter("program", "evil.bin"))
    assert_bad(cli("run", str(bundle)), "symbolic link to outside the bundle")
    # A link that stays inside the directory is only another name for a file of the bundle.
    (bundle / "same.bin").symlink_to(bundle / "program.bin")
    edit(bundle, setter("program", "same.bin"))
    assert cli("run", str(bundle)).exit_code == 0


def test_a_file_name_that_is_a_directory(bundle):
    (bundle / "adir").mkdir()
    edit(bundle, setter("layout", "adir"))
    assert_bad(cli("run", str(bundle)), "is not a regular file")


# ---------------------------------------------------------------- program.bin

def test_program_not_a_multiple_of_16(bundle):
    (bundle / "program.bin").write_bytes((bundle / "program.bin").read_bytes() + b"\0\0\0")
    assert_bad(cli("run", str(bundle)), "not a whole number of 16-byte instructions")


def test_program_with_an_unknown_opcode(bundle):
    raw = bytearray((bundle / "program.bin").read_bytes())
    raw[0] = (raw[0] & ~0x7) | 0x7  # opcode bits 0..2 of the first instruction
    (bundle / "program.bin").write_bytes(bytes(raw))
    assert_bad(cli("run", str(bundle)), "opcode 7 is not a VTA instruction")


def test_instruction_count_disagrees_with_the_manifest(bundle):
    raw = (bundle / "program.bin").read_bytes()
    (bundle / "program.bin").write_bytes(raw[:-16])
    assert_bad(cli("run", str(bundle)), "but the manifest's insn_count is")
    edit(bundle, lambda d: {**d, "insn_count": d["insn_count"] - 1})
    assert_bad(cli("run", str(bundle)), "does not end with FINISH")


def test_unknown_memory_type(bundle):
    raw = bytearray((bundle / "program.bin").read_bytes())
    at = next(i for i in range(0, len(raw), 16) if raw[i] & 0x7 == 0)  # the first LOAD
    raw[at] = (raw[at] & 0x7F) | 0x80  # memory_type: bits 7..9; 0b111 = 7 is no memory
    raw[at + 1] |= 0x3
    (bundle / "program.bin").write_bytes(bytes(raw))
    assert_bad(cli("run", str(bundle)), "unknown memory type 7")


# ---------------------------------------------------------------- dram.bin

def test_dram_truncated_or_oversized(bundle):
    raw = (bundle / "dram.bin").read_bytes()
    (bundle / "dram.bin").write_bytes(raw[:-1])
    assert_bad(cli("run", str(bundle)), "dram.bin is truncated")
    (bundle / "dram.bin").write_bytes(raw + b"\0")
    assert_bad(cli("run", str(bundle)), "dram.bin is oversized")


def _cut(b: Path, size: int):
    (b / "dram.bin").write_bytes((b / "dram.bin").read_bytes()[:size])
    edit(b, setter("dram_bytes", size))  # the manifest agrees: only the static checks can tell
    return cli("run", str(b))


def test_dram_cut_in_the_micro_ops_or_in_the_inputs_is_exit_2_before_running(gemm_bundle, tmp_path):
    regions = json.loads((gemm_bundle / "manifest.json").read_text())["regions"]
    uop, inp = regions["uop"], regions["inp"]
    assert uop["offset"] == max(r["offset"] for r in regions.values())  # the micro-ops come last
    in_uops = _cut(Path(shutil.copytree(gemm_bundle, tmp_path / "u")), uop["offset"] + uop["size"] // 2)
    assert_bad(in_uops, "(LOAD UOP) moves dram.bin bytes")
    in_inputs = _cut(Path(shutil.copytree(gemm_bundle, tmp_path / "i")), inp["offset"] + inp["size"] // 2)
    assert_bad(in_inputs, "dram.bin")


def test_a_load_past_the_end_of_dram(bundle):
    """The layout can be in range while the program reads past the end: caught before it runs."""
    size = json.loads((bundle / "manifest.json").read_text())["regions"]["uop"]["offset"]
    assert_bad(_cut(bundle, size), "(LOAD UOP) moves dram.bin bytes")


# ---------------------------------------------------------------- layout.npz

def _layout(b: Path) -> dict[str, np.ndarray]:
    with np.load(b / "layout.npz") as npz:
        return {k: npz[k] for k in npz.files}


def _save_layout(b: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(b / "layout.npz", "wb") as fh:
        np.savez(fh, **arrays)


LAYOUT_DAMAGE = [
    ("float dtype", lambda a: {**a, "A_dram": a["A_dram"].astype(np.float64)}, "must be integers"),
    ("bool dtype", lambda a: {**a, "C_dram": a["C_dram"] > 0}, "must be integers"),
    ("output shape", lambda a: {**a, "C_dram": a["C_dram"].reshape(24, 20)}, "expected C's logical shape"),
    ("2-D input map", lambda a: {**a, "A_dram": a["A_dram"].reshape(-1, 1)}, "must be 1-D arrays of one length"),
    ("lengths differ", lambda a: {**a, "B_index": a["B_index"][:-1]}, "must be 1-D arrays of one length"),
    ("index outside", lambda a: {**a, "A_index": a["A_index"] + 10**6}, "flat indices outside A's logical shape"),
    ("negative index", lambda a: {**a, "B_index": a["B_index"] - 1}, "flat indices outside B's logical shape"),
    ("offset outside", lambda a: {**a, "A_dram": a["A_dram"] + 10**9}, "byte offsets outside dram.bin"),
    ("output offset outside", lambda a: {**a, "C_dram": a["C_dram"] * 0 - 5}, "byte offsets outside dram.bin"),
    ("byte listed twice", lambda a: {**a, "C_dram": a["C_dram"] * 0 + a["C_dram"].flat[0]}, "listed for two"),
    ("input over output", lambda a: {**a, "A_dram": a["A_dram"] * 0 + a["C_dram"].flat[0]}, "listed for two"),
    ("missing array", lambda a: {k: v for k, v in a.items() if k != "B_index"}, "lacks B_index"),
    ("object array", lambda a: {**a, "A_dram": np.array([None, 1], dtype=object)}, "not a readable npz"),
]


@pytest.mark.parametrize("what,change,fragment", LAYOUT_DAMAGE, ids=[c[0] for c in LAYOUT_DAMAGE])
def test_damaged_layout_is_exit_2(bundle, what, change, fragment):
    _save_layout(bundle, change(_layout(bundle)))
    assert_bad(cli("run", str(bundle)), fragment)


def test_layout_missing_corrupt_or_not_a_zip(bundle):
    good = (bundle / "layout.npz").read_bytes()
    (bundle / "layout.npz").write_bytes(good[: len(good) // 2])
    assert_bad(cli("run", str(bundle)), "layout.npz")
    (bundle / "layout.npz").write_bytes(b"not a zip at all")
    assert_bad(cli("run", str(bundle)), "not a readable npz archive")
    with open(bundle / "layout.npz", "wb") as fh:
        np.save(fh, np.arange(4))  # a .npy, not an .npz
    assert_bad(cli("run", str(bundle)), "is not an npz archive")
    (bundle / "layout.npz").unlink()
    assert_bad(cli("run", str(bundle)), "layout.npz is missing")


def test_layout_member_claiming_a_huge_array_is_refused_before_allocation(bundle):
    arrays = _layout(bundle)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<i8", "fortran_order": False, "shape": (10**12,)})
    with zipfile.ZipFile(bundle / "layout.npz", "w") as z:
        for k, v in arrays.items():
            if k != "A_dram":
                buf = io.BytesIO()
                np.save(buf, v)
                z.writestr(f"{k}.npy", buf.getvalue())
        z.writestr("A_dram.npy", header.getvalue() + b"\0" * 64)
    assert_bad(cli("run", str(bundle)), "A_dram is a [1000000000000] int64 array")


def test_corrupt_compressed_member(bundle):
    raw = bytearray((bundle / "layout.npz").read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside a deflated member: bad CRC or bad stream
    (bundle / "layout.npz").write_bytes(bytes(raw))
    assert_bad(cli("run", str(bundle)), "layout.npz")


def test_damage_from_the_installed_command_is_one_line(bundle):
    """The same through `python -m embedcsp.cli`, as a user sees it: no traceback."""
    edit(bundle, lambda d: [d])
    r = subprocess.run([sys.executable, "-m", "embedcsp.cli", "run", str(bundle)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {bundle}/manifest.json must hold a JSON object, got a list"]


# ---------------------------------------------------------------- --inputs and --dump

def _wrap8(x: np.ndarray) -> np.ndarray:
    """The low 8 bits as int8, by arithmetic rather than by a cast."""
    return (((x.astype(np.int64) + 128) % 256) - 128).astype(np.int8)


def test_inputs_and_dump_round_trip_gemm(gemm_bundle, tmp_path):
    rng = np.random.default_rng(123)
    a = rng.integers(-128, 128, (20, 40), dtype=np.int8)
    b = rng.integers(-128, 128, (40, 24), dtype=np.int8)
    a[0, :] = -128
    b[:, 0] = -128  # the largest products
    np.savez(tmp_path / "in.npz", A=a, B=b)
    r = cli("run", str(gemm_bundle), "--inputs", str(tmp_path / "in.npz"), "--dump", str(tmp_path / "out"))
    assert r.exit_code == 0, r.stderr
    assert "480 outputs bit-exact" in r.stdout and "in.npz" in r.stdout
    assert not (tmp_path / "out.npz").exists()  # the name is used as given
    with np.load(tmp_path / "out") as dump:
        assert sorted(dump.files) == ["A", "B", "C"]
        c = dump["C"]
        np.testing.assert_array_equal(dump["A"], a)
        np.testing.assert_array_equal(dump["B"], b)
    assert c.dtype == np.int8 and c.shape == (20, 24)
    want = _wrap8(a.astype(np.int64) @ b.astype(np.int64))
    np.testing.assert_array_equal(c, want)
    assert c[0, 0] == _wrap8(np.array(40 * 128 * 128))

    # Other integer dtypes are fine while every value fits int8.
    np.savez(tmp_path / "in16.npz", A=a.astype(np.int16), B=b.astype(np.int64))
    r = cli("run", str(gemm_bundle), "--inputs", str(tmp_path / "in16.npz"), "--dump", str(tmp_path / "o16.npz"))
    assert r.exit_code == 0, r.stderr
    with np.load(tmp_path / "o16.npz") as dump:
        np.testing.assert_array_equal(dump["C"], want)


def test_dump_of_random_inputs_matches_numpy(gemm_bundle, tmp_path):
    r = cli("run", str(gemm_bundle), "--seed", "7", "--dump", str(tmp_path / "d.npz"), "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["seed"] == 7 and doc["inputs"] is None and doc["ok"] is True
    with np.load(tmp_path / "d.npz") as dump:
        np.testing.assert_array_equal(dump["C"], _wrap8(dump["A"].astype(np.int64) @ dump["B"].astype(np.int64)))
        fresh = np.random.default_rng(7)
        np.testing.assert_array_equal(dump["A"], fresh.integers(-128, 128, (20, 40), dtype=np.int8))


def _naive_conv(data, weight, pad, stride):
    n, c, h, w = data.shape
    k, _, r, s = weight.shape
    p, q = (h + 2 * pad - r) // stride + 1, (w + 2 * pad - s) // stride + 1
    padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), np.int64)
    padded[:, :, pad:pad + h, pad:pad + w] = data
    out = np.zeros((n, k, p, q), np.int64)
    for pp, qq in itertools.product(range(p), range(q)):
        window = padded[:, :, pp * stride:pp * stride + r, qq * stride:qq * stride + s]
        out[:, :, pp, qq] = np.einsum("ncrs,kcrs->nk", window, weight.astype(np.int64))
    return out


def test_inputs_and_dump_round_trip_conv2d_requant(tmp_path):
    op = conv2d(1, 3, 7, 7, 8, 3, 3, 1, 1, 2, 2)
    o = solve_and_verify(op, ACC, Options(epilogue=Epilogue("requant", 5)), seed=0)
    write_bundle(tmp_path / "b", o.compiled, o.inputs, 0, o.verification, o.transforms)
    rng = np.random.default_rng(5)
    data = rng.integers(-128, 128, (1, 3, 7, 7), dtype=np.int8)
    weight = rng.integers(-128, 128, (8, 3, 3, 3), dtype=np.int8)
    np.savez(tmp_path / "in.npz", data=data, weight=weight)
    r = cli("run", str(tmp_path / "b"), "--inputs", str(tmp_path / "in.npz"), "--dump", str(tmp_path / "o.npz"))
    assert r.exit_code == 0, r.stderr
    with np.load(tmp_path / "o.npz") as dump:
        out = dump["out"]
        assert sorted(dump.files) == ["data", "out", "weight"]
    want = np.clip(_naive_conv(data, weight, 1, 2) >> 5, -128, 127).astype(np.int8)  # sums fit int32 here
    assert out.shape == (1, 8, 4, 4) and out.dtype == np.int8
    np.testing.assert_array_equal(out, want)


BAD_INPUTS = [
    ("missing B", lambda a, b: {"A": a}, "lacks B"),
    ("extra name", lambda a, b: {"A": a, "B": b, "X": a}, "has X, which gemm M=20 N=24 K=40 does not take"),
    ("wrong shape", lambda a, b: {"A": a.T, "B": b}, "A has shape [40, 20], expected [20, 40]"),
    ("float dtype", lambda a, b: {"A": a.astype(np.float32), "B": b}, "A has dtype float32; expected int8"),
    ("bool dtype", lambda a, b: {"A": a > 0, "B": b}, "A has dtype bool"),
    ("int16 beyond int8", lambda a, b: {"A": a.astype(np.int16) + 200, "B": b}, "outside int8's -128..127"),
    ("uint8 beyond int8", lambda a, b: {"A": a.view(np.uint8), "B": b}, "outside int8's -128..127"),
]


@pytest.mark.parametrize("what,arrays,fragment", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_are_exit_2(gemm_bundle, tmp_path, what, arrays, fragment):
    a = np.full((20, 40), -3, np.int8)
    b = np.full((40, 24), 5, np.int8)
    np.savez(tmp_path / "in.npz", **arrays(a, b))
    r = cli("run", str(gemm_bundle), "--inputs", str(tmp_path / "in.npz"), "--dump", str(tmp_path / "o.npz"))
    assert_bad(r, fragment)
    assert not (tmp_path / "o.npz").exists()


def test_a_dump_replays_as_inputs(gemm_bundle, tmp_path):
    """A --dump file carries the output too; --inputs skips the output's name."""
    a = np.arange(-400, 400, dtype=np.int64).reshape(20, 40).clip(-128, 127).astype(np.int8)
    b = np.full((40, 24), -7, np.int8)
    np.savez(tmp_path / "in.npz", A=a, B=b)
    assert cli("run", str(gemm_bundle), "--inputs", str(tmp_path / "in.npz"),
               "--dump", str(tmp_path / "first.npz")).exit_code == 0
    r = cli("run", str(gemm_bundle), "--inputs", str(tmp_path / "first.npz"), "--dump", str(tmp_path / "again.npz"))
    assert r.exit_code == 0, r.stderr
    with np.load(tmp_path / "first.npz") as first, np.load(tmp_path / "again.npz") as again:
        want = (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int8)
        assert np.array_equal(first["C"], want) and np.array_equal(again["C"], want)


def test_inputs_file_that_is_not_an_npz(gemm_bundle, tmp_path):
    assert_bad(cli("run", str(gemm_bundle), "--inputs", str(tmp_path / "none.npz")), "is not a file")
    (tmp_path / "text.npz").write_text("A,B\n1,2\n")
    assert_bad(cli("run", str(gemm_bundle), "--inputs", str(tmp_path / "text.npz")), "not a readable npz")
    np.save(tmp_path / "one.npy", np.zeros((20, 40), np.int8))
    assert_bad(cli("run", str(gemm_bundle), "--inputs", str(tmp_path / "one.npy")), "is not an npz archive")


def test_seed_and_dump_are_checked_before_running(gemm_bundle, tmp_path):
    assert_bad(cli("run", str(gemm_bundle), "--seed", "-1"), "--seed must be within 0..2147483647")
    assert_bad(cli("run", str(gemm_bundle), "--seed", str(2**31)), "--seed must be within 0..2147483647")
    assert_bad(cli("run", str(gemm_bundle), "--dump", str(tmp_path / "no" / "d.npz")), "does not exist")
    assert_bad(cli("run", str(gemm_bundle), "--dump", str(tmp_path)), "is a directory")


def test_run_bundle_from_python(gemm_bundle):
    b = read_bundle(gemm_bundle)
    a = np.arange(20 * 40).reshape(20, 40) % 200 - 100
    bb = np.ones((40, 24), np.int32)
    result = run_bundle(b, inputs={"A": a, "B": bb})
    assert result.ok and result.seed is None
    np.testing.assert_array_equal(result.outputs["C"], _wrap8(a @ bb))
    np.testing.assert_array_equal(result.expected["C"], result.outputs["C"])
    assert result.inputs["A"].dtype == np.int8
    assert run_bundle(b, seed=3).seed == 3
    with pytest.raises(BadInput, match="lacks B"):
        run_bundle(b, inputs={"A": a})


# ---------------------------------------------------------------- status, FAILED, provenance

def _failing(o):
    """A real verification that failed: the program's output compared with the wrong epilogue."""
    c = o.compiled
    v = verify_program(c.operator, c.program, ACC.pattern, Epilogue("requant", 3, "floor"), o.inputs)
    assert not v.ok and v.mismatches > 0
    return v


def test_bundle_from_a_failed_verification_is_marked(tmp_path):
    o = solve_and_verify(gemm(20, 24, 40), ACC, Options(), seed=0)
    write_bundle(tmp_path / "b", o.compiled, o.inputs, 0, _failing(o), o.transforms)
    doc = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert doc["status"] == "failed" and doc["verification"]["ok"] is False
    text = (tmp_path / "b" / "FAILED").read_text()
    assert "FAILED" in text and "seed 0" in text and "differed" in text
    # It still runs; the program itself is right for its manifest, so this run verifies,
    # but the user is told where the bundle came from.
    r = cli("run", str(tmp_path / "b"))
    assert r.exit_code == 0
    assert "written by a failed verification" in r.stderr and r.stderr.startswith("warning:")
    assert read_bundle(tmp_path / "b").failed
    # Written again after a verification that passed: the marker goes.
    write_bundle(tmp_path / "b", o.compiled, o.inputs, 0, o.verification, o.transforms)
    assert not (tmp_path / "b" / "FAILED").exists()
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["status"] == "verified"
    assert cli("run", str(tmp_path / "b")).stderr == ""


def test_solve_out_after_a_failed_verification_writes_a_marked_bundle(tmp_path, monkeypatch):
    real = Epilogue.apply

    def off_by_one(self, acc):  # a ground truth that disagrees with the program in one element
        out = real(self, acc).copy()
        out.flat[0] = np.int8(int(out.flat[0]) ^ 1)
        return out

    monkeypatch.setattr(Epilogue, "apply", off_by_one)
    r = cli("solve", "gemm", "--m", "20", "--n", "24", "--k", "40", "--out", str(tmp_path / "b"))
    assert r.exit_code == 1 and "FAILED     1 of 480 outputs differ" in r.stdout
    assert "1 of 480" in (tmp_path / "b" / "FAILED").read_text()
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["status"] == "failed"


def test_unverified_bundle(tmp_path):
    o = solve_and_verify(gemm(20, 24, 40), ACC, Options(), seed=0)
    write_bundle(tmp_path / "b", o.compiled, o.inputs, 0, None, o.transforms)
    doc = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert doc["status"] == "unverified" and "verification" not in doc
    assert not (tmp_path / "b" / "FAILED").exists()
    assert cli("run", str(tmp_path / "b")).exit_code == 0


def test_manifest_keeps_its_keys_and_records_provenance(gemm_bundle):
    doc = json.loads((gemm_bundle / "manifest.json").read_text())
    assert doc["format"] == FORMAT
    assert {"format", "isa", "vta_config", "operator", "epilogue", "program", "insn_count", "dram", "layout",
            "tensors", "accelerator", "input_seed", "embedding", "solver", "plan", "regions", "host_transform",
            "verification", "dram_bytes", "status", "provenance"} <= set(doc)
    assert doc["dram_bytes"] == (gemm_bundle / "dram.bin").stat().st_size
    assert doc["status"] == "verified"
    prov = doc["provenance"]
    assert prov["input_seed"] == 0 and prov["strategy"] == "csp" and prov["solver_status"] == "OPTIMAL"
    assert prov["accelerator"]["sha256"] == ACC.digest
    assert prov["accelerator"]["description"]["vta_config"] == doc["vta_config"]
    r = cli("run", str(gemm_bundle), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["provenance"] == prov


# ---------------------------------------------------------------- the size bound

def test_covered_rows_match_brute_force():
    for length, stride, width, pad in itertools.product(range(1, 9), range(1, 6), range(1, 6), range(4)):
        if width > length + 2 * pad:
            continue
        windows = (length + 2 * pad - width) // stride + 1
        hit = {p * stride + r - pad for p in range(windows) for r in range(width)}
        assert covered(length, windows, stride, width, pad) == len(hit & set(range(length)))
