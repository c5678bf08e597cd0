"""The command line: outputs, bundles, and one clear line with the documented exit code on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedcsp.targets.vta.config import CONFIG_KEYS

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "embedcsp.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_solve_writes_a_bundle_that_runs(tmp_path):
    out = tmp_path / "b"
    r = cli("solve", "gemm", "--m", "35", "--n", "700", "--k", "64", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "verified" in r.stdout and "BLOCK_OUT lanes (16) <- n[700]" in r.stdout
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["format"] == "embedcsp-bundle/1" and doc["isa"] == "vta"
    assert set(doc["vta_config"]) == set(CONFIG_KEYS)
    assert doc["operator"] == {"kind": "gemm", "M": 35, "N": 700, "K": 64, "statement": "C[m,n] += A[m,k] * B[k,n]",
                               "dims": {"m": 35, "n": 700, "k": 64},
                               "shapes": {"A": [35, 64], "B": [64, 700], "C": [35, 700]}}
    assert doc["epilogue"] == {"kind": "wrap"}
    assert doc["insn_count"] * 16 == (out / "program.bin").stat().st_size
    assert doc["tensors"] == {
        "A": {"role": "input", "dtype": "int8", "shape": [35, 64]},
        "B": {"role": "input", "dtype": "int8", "shape": [64, 700]},
        "C": {"role": "output", "dtype": "int8", "shape": [35, 700]},
    }
    with np.load(out / "layout.npz") as npz:
        assert set(npz.files) == {"A_dram", "A_index", "B_dram", "B_index", "C_dram"}
        assert npz["C_dram"].shape == (35, 700)
        assert len(npz["A_dram"]) == 35 * 64 and len(npz["B_index"]) == 64 * 700
    for seed in ("1", "5"):
        r = cli("run", str(out), "--seed", seed)
        assert r.returncode == 0 and "bit-exact" in r.stdout, r.stderr


def test_json_output():
    r = cli("solve", "gemm", "--m", "20", "--n", "30", "--k", "40", "--json")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert doc["verification"]["ok"] is True and doc["solver"]["status"] == "OPTIMAL"
    assert doc["operator"] == {"kind": "gemm", "M": 20, "N": 30, "K": 40}
    assert doc["timing"]["cycles"] >= doc["roofline"]["cycles"] > 0


def test_deepbench_by_name_and_listing():
    r = cli("solve", "deepbench", "gemm-server-2", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["operator"] == {"kind": "gemm", "M": 35, "N": 700, "K": 2048}
    lines = cli("deepbench", "list").stdout.splitlines()
    assert sum(x.startswith("gemm-") for x in lines) == 88
    assert sum(x.startswith("conv-") for x in lines) == 123


def test_conv_and_requant_from_the_cli():
    r = cli("solve", "conv2d", "--n", "1", "--c", "3", "--h", "9", "--w", "9", "--k", "16", "--r", "3",
            "--s", "3", "--pad", "1", "--stride", "2", "--epilogue", "requant", "--shift", "6")
    assert r.returncode == 0, r.stderr
    assert "duplication" in r.stdout  # im2col on the host, reported


BAD = [
    (["solve", "gemm", "--m", "0", "--n", "1", "--k", "1"], "M must be at least 1"),
    (["solve", "gemm", "--m", "-3", "--n", "1", "--k", "1"], "M must be at least 1"),
    (["solve", "gemm", "--m", "3", "--n", "1", "--k", "99999999999"], "beyond the supported"),
    (["solve", "deepbench", "gemm-server-99"], "rows 1..75"),
    (["solve", "deepbench", "gemm-sever-2"], "malformed DeepBench operator name"),
    (["solve", "gemm", "--m", "3", "--n", "1", "--k", "1", "--isa", "/nonexistent.toml"], "does not exist"),
    (["solve", "gemm", "--m", "3", "--n", "1", "--k", "1", "--time-limit", "0"], "--time-limit must be a positive number"),
    (["solve", "gemm", "--m", "3", "--n", "1", "--k", "1", "--shift", "40"], "--shift must be within 0..31"),
    (["solve", "gemm", "--m", "3", "--n", "1", "--k", "1", "--shift", "16", "--rounding", "floor",
      "--epilogue", "requant"], "--shift must be within 0..15"),
    (["solve", "gemm", "--m", "3", "--n", "1", "--k", "1", "--shift", "20", "--epilogue", "requant"],
     "the requant shift must be within 0..15, got 20: VTA's ALU reads a shift as 5 signed bits"),
    (["solve", "gemm", "--m", "3", "--n", "1", "--k", "1", "--board", "zed"], "unknown board"),
    (["solve", "conv2d", "--n", "1", "--c", "3", "--h", "4", "--w", "4", "--k", "8", "--r", "9", "--s", "3"],
     "larger than the padded"),
    (["solve", "conv2d", "--n", "1", "--c", "3", "--h", "8", "--w", "8", "--k", "8", "--r", "3", "--s", "3",
      "--stride", "0"], "stride_h must be at least 1"),
    (["solve", "conv2d", "--n", "1", "--c", "3", "--h", "8", "--w", "8", "--k", "8", "--r", "3", "--s", "3",
      "--pad", "-1"], "pad_h must be a whole number >= 0"),
    (["solve", "conv2d", "--n", "1", "--c", "3", "--h", "8", "--w", "8", "--k", "8", "--r", "3", "--s", "3",
      "--pad", "1", "--pad-h", "1"], "not both"),
    # The rows of issue 8's table: each once crashed with a traceback.
    (["solve", "gemm", "--m", "3", "--n", "1", "--k", "1", "--seed", "-1"], "--seed must be within 0..2147483647"),
    (["solve", "gemm", "--m", "3", "--n", "1", "--k", "1", "--seed", "2147483648"], "--seed must be within"),
    (["solve", "gemm", "--m", "3", "--n", "1", "--k", "1", "--time-limit", "nan"], "--time-limit must be a positive"),
    (["solve", "gemm", "--m", "3", "--n", "1", "--k", "1", "--time-limit", "inf"], "--time-limit must be a positive"),
    (["solve", "gemm", "--m", "3", "--n", "1", "--k", "1", "--time-limit", "-1"], "--time-limit must be a positive"),
    (["bench", "--only", "gemm-server-2", "--time-limit", "nan", "--out", "/tmp/never-written"],
     "--time-limit must be a positive"),
    (["bench", "--only", "gemm-server-2", "--seed", "-1", "--out", "/tmp/never-written"], "--seed must be within"),
    (["isa", "check", "/nonexistent.toml"], "does not exist"),
]


@pytest.mark.parametrize("args,fragment", BAD, ids=[" ".join(a[1:3]) + f"-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_is_one_line_and_exit_2(args, fragment):
    r = cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], r.stderr


def test_malformed_isa_and_unwritable_out(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[accelerator]\nfamily = 'vta'\n[vta_config]\nLOG_BATCH = 'x'\n")
    r = cli("solve", "gemm", "--m", "3", "--n", "1", "--k", "1", "--isa", str(bad))
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
    afile = tmp_path / "file"
    afile.write_text("x")
    r = cli("solve", "gemm", "--m", "3", "--n", "1", "--k", "1", "--out", str(afile))
    assert r.returncode == 2 and "not a directory" in r.stderr


def test_timeout_exit_code():
    r = cli("solve", "gemm", "--m", "35", "--n", "700", "--k", "2048", "--time-limit", "0.000001")
    assert r.returncode == 4 and "raise --time-limit" in r.stderr


def test_run_refuses_broken_bundles(tmp_path):
    assert cli("run", str(tmp_path)).returncode == 2  # no manifest.json
    out = tmp_path / "b"
    assert cli("solve", "gemm", "--m", "40", "--n", "24", "--k", "48", "--out", str(out)).returncode == 0
    program = (out / "program.bin").read_bytes()
    (out / "program.bin").write_bytes(program[:-16])  # drop FINISH
    r = cli("run", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    # Clear the dependency flags (bits 3..6) of every STORE: the program races or deadlocks.
    words = bytearray(program)
    for at in range(0, len(words), 16):
        if words[at] & 0x7 == 1:
            words[at] &= 0x87
    (out / "program.bin").write_bytes(bytes(words))
    r = cli("run", str(out))
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.startswith("error:")


def test_isa_show_states_the_derived_layout_of_a_variant():
    r = cli("isa", "show", str(ROOT / "isa" / "vta_b2_i8_o32.toml"))
    assert r.returncode == 0, r.stderr
    assert "lane i =     8  reduction: indexes inp and wgt" in r.stdout
    # The ALU's source factors are as wide as the ACC depth (2^8), the GEMM's as the INP depth (2^9).
    assert "src_factor_out [87:80]" in r.stdout and "src_factor_out [88:80]" in r.stdout
    doc = json.loads(cli("isa", "show", "--json").stdout)
    assert doc["description"]["vta_config"]["LOG_BLOCK_IN"] == 4 and len(doc["sha256"]) == 64


def test_isa_check_is_one_line_per_file_and_exit_2_on_a_bad_one(tmp_path):
    r = cli("isa", "check", str(ROOT / "isa" / "vta.toml"), str(ROOT / "isa" / "vta_b2_i8_o32.toml"))
    assert r.returncode == 0 and r.stdout.count("\nok") == 1 and r.stdout.startswith("ok")
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "isa" / "vta.toml").read_text().replace('family = "vta"', 'family = "tpu"'))
    r = cli("isa", "check", str(bad))
    assert r.returncode == 2 and r.stderr.startswith("error:") and "unknown accelerator family 'tpu'" in r.stderr
