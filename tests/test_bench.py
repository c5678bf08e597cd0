"""The benchmark harness: rows from both strategies, the summary's figures, the four writers, the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from embedcsp import bench
from embedcsp.errors import BadInput
from embedcsp.operator import gemm

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "embedcsp.cli", *args], check=False, capture_output=True,
                          text=True, timeout=300)


# ---------------------------------------------------------------- evaluate


def test_evaluate_ragged_gemm_both_strategies_verified():
    row = bench.evaluate(bench.Case("tiny-35", gemm(35, 40, 64)), time_limit=5)
    assert (row["name"], row["kind"], row["M"], row["N"], row["K"], row["board"]) == \
        ("tiny-35", "gemm", 35, 40, 64, "pynq")
    assert row["verified"] is True and row["ref_verified"] is True
    assert row["error"] == "" and row["ref_error"] == ""
    # Ours puts N=40 on the 16 output lanes (48 issued); VTA's mapping puts M=35 there (48 issued).
    assert row["padding_efficiency"] == round(40 / 48, 6)
    assert row["ref_padding_efficiency"] == round(35 / 48, 6)
    assert row["ref_padded"] is True  # 35 is no multiple of BLOCK_OUT=16: TVM needs hand padding
    assert row["speedup"] == round(row["ref_cycles"] / row["cycles"], 6)
    assert row["roofline_efficiency"] == round(row["roofline_cycles"] / row["cycles"], 4)
    assert row["ref_roofline_efficiency"] == round(row["roofline_cycles"] / row["ref_cycles"], 4)
    assert row["status"] == "OPTIMAL" and row["objective"] == row["bound"] == 35 * 48 * 64


def test_evaluate_aligned_gemm_needs_no_padding():
    row = bench.evaluate(gemm(16, 16, 16), time_limit=5)  # a bare Operator is named by its shape
    assert row["name"] == "gemm M=16 N=16 K=16"
    assert row["verified"] is True and row["ref_verified"] is True
    assert row["padding_efficiency"] == row["ref_padding_efficiency"] == 1.0
    assert row["ref_padded"] is False
    assert row["speedup"] == round(row["ref_cycles"] / row["cycles"], 6)


def test_evaluate_by_deepbench_name():
    row = bench.evaluate("GEMM-device-4", time_limit=5)
    assert (row["name"], row["M"], row["N"], row["K"]) == ("gemm-device-4", 64, 1, 1216)
    assert bench.row_ok(row) and row["ref_padded"] is False


def test_reference_error_is_a_column_not_a_crash(monkeypatch):
    real = bench.solve_and_verify

    def no_reference(op, acc, options, seed=0):
        if options.strategy == "reference":
            raise BadInput("the reference strategy exists for gemm only")
        return real(op, acc, options, seed)

    monkeypatch.setattr(bench, "solve_and_verify", no_reference)
    row = bench.evaluate(gemm(16, 16, 16), time_limit=5)
    assert row["verified"] is True and row["ref_verified"] is False
    assert row["ref_error"] == "the reference strategy exists for gemm only"
    assert "speedup" not in row and "ref_cycles" not in row and not bench.row_ok(row)


def test_a_bug_in_one_operator_becomes_a_failed_row(monkeypatch):
    monkeypatch.setattr(bench, "evaluate", lambda *a, **k: 1 / 0)
    row = bench._evaluate_safely("gemm-device-4", bench.BenchConfig())
    assert row["verified"] is False and row["error"].startswith("internal error: ZeroDivisionError")


def test_names_and_unknown_names():
    assert len(bench.names_for("gemm")) == 88
    convs = bench.names_for("conv")
    assert len(convs) == len(set(convs)) == 118  # duplicate rows solved once
    assert bench.names_for("all") == bench.names_for("gemm") + convs
    assert bench.BenchConfig(only=("gemm-device-4", "GEMM-DEVICE-4", "gemm-device-8")).names() == \
        ["gemm-device-4", "gemm-device-8"]
    with pytest.raises(BadInput, match="gemm-device has rows 1..13"):
        bench.BenchConfig(only=("gemm-device-99",)).names()


# ---------------------------------------------------------------- summarize


def _row(name: str, kind: str = "gemm", **kw) -> dict:
    shape = {"M": 35, "N": 700, "K": 2048} if kind == "gemm" else \
        {"N": 1, "C": 3, "H": 8, "W": 8, "K": 16, "R": 3, "S": 3, "pad": "1x1", "stride": "1x1"}
    return {"name": name, "kind": kind, **shape, "board": "pynq", "status": "OPTIMAL", "verified": True,
            "verify_s": 0.01, "padding_efficiency": 1.0, "cycles": 100, "roofline_cycles": 50, "error": "",
            **kw}


ROWS = [
    _row("a", solve_s=0.1, roofline_efficiency=0.25, ref_verified=True, ref_padding_efficiency=0.25,
         ref_roofline_efficiency=0.125, ref_cycles=200, ref_padded=True, speedup=2.0, ref_error=""),
    _row("b", solve_s=0.3, roofline_efficiency=0.5, ref_verified=True, ref_padding_efficiency=0.4,
         ref_roofline_efficiency=0.25, ref_cycles=800, ref_padded=True, speedup=8.0, ref_error=""),
    _row("c", solve_s=0.2, roofline_efficiency=1.0, ref_verified=True, ref_padding_efficiency=1.0,
         ref_roofline_efficiency=0.5, ref_cycles=100, ref_padded=False, speedup=1.0, ref_error=""),
    _row("d", "conv2d", solve_s=0.4, roofline_efficiency=1.0, ref_verified=False,
         ref_error="the reference strategy exists for gemm only"),
    {"name": "e", "kind": "gemm", "M": 1, "N": 1, "K": 1, "board": "pynq", "verified": False,
     "error": "gemm M=1 N=1 K=1 cannot be embedded", "ref_verified": True, "ref_cycles": 10,
     "ref_padding_efficiency": 0.0625, "ref_roofline_efficiency": 0.5, "ref_padded": True, "ref_error": ""},
]


def test_summarize_figures():
    s = bench.summarize(ROWS, wall_s=12.34)
    assert s["operators"] == 5 and s["verified"] == 3 and s["failed"] == ["d", "e"]
    assert s["ref_unavailable"] == ["d"]
    assert s["optimal"] == 4
    assert s["speedup_operators"] == 3
    assert s["geomean_speedup"] == round(16 ** (1 / 3), 6)  # (2 * 8 * 1) ** (1/3)
    # ref_padding_efficiency < 0.5: a, b and e; e has no speedup (ours failed).
    assert s["low_utilization_operators"] == 3 and s["low_utilization_with_speedup"] == 2
    assert s["geomean_speedup_low_utilization"] == 4.0  # sqrt(2 * 8)
    assert (s["max_speedup"], s["max_speedup_operator"]) == (8.0, "b")
    assert s["roofline_operators"] == 4  # a..d verified ours
    assert s["geomean_roofline_efficiency"] == round((0.25 * 0.5 * 1.0 * 1.0) ** 0.25, 6)
    assert s["ref_roofline_operators"] == 4  # a, b, c, e
    assert s["ref_geomean_roofline_efficiency"] == round((0.125 * 0.25 * 0.5 * 0.5) ** 0.25, 6)
    assert s["median_solve_s"] == 0.25 and (s["max_solve_s"], s["slowest_solve"]) == (0.4, "d")
    assert s["wall_s"] == 12.3 and s["board"] == "pynq"


def test_summarize_nothing_to_measure():
    s = bench.summarize([ROWS[4]])
    assert s["geomean_speedup"] is None and s["max_speedup"] is None and s["median_solve_s"] is None
    assert s["failed"] == ["e"] and s["wall_s"] is None
    assert "n/a" in bench.summary_lines(s)[1]


# ---------------------------------------------------------------- writers


def test_writers(tmp_path):
    s = bench.summarize(ROWS, wall_s=1.0)
    bench.write_csv(ROWS, tmp_path / "x.csv")
    with (tmp_path / "x.csv").open() as fh:
        reader = csv.DictReader(fh)
        got = list(reader)
    assert reader.fieldnames == bench.COLUMNS
    assert [r["name"] for r in got] == ["a", "b", "c", "d", "e"]
    assert got[1]["speedup"] == "8.0" and got[1]["ref_padded"] == "True" and got[3]["speedup"] == ""
    assert got[3]["pad"] == "1x1" and got[0]["pad"] == ""

    bench.write_json(ROWS, s, tmp_path / "x.json")
    doc = json.loads((tmp_path / "x.json").read_text())
    assert doc["summary"] == json.loads(json.dumps(s))
    assert doc["rows"][0] == {k: ROWS[0].get(k) for k in bench.COLUMNS}

    bench.write_markdown(ROWS, s, tmp_path / "x.md", "DeepBench test")
    md = (tmp_path / "x.md").read_text()
    for line in bench.summary_lines(s, "DeepBench test"):
        assert f"- {line}" in md
    low = md.split("## Low utilization")[1].split("##")[0]
    assert "| a |" in low and "| b |" in low and "| e |" in low and "| c |" not in low
    top = md.split("## The 10 largest speedups")[1].split("##")[0]
    assert top.index("| b |") < top.index("| a |") < top.index("| c |")

    bench.write_plot(ROWS, tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- the command


def test_cli_bench_writes_four_files(tmp_path):
    out = tmp_path / "b"
    r = cli("bench", "--suite", "gemm", "--only", "gemm-device-4", "gemm-device-8", "--jobs", "2",
            "--out", str(out), "--time-limit", "5")
    assert r.returncode == 0, r.stderr
    assert "2 operators, 2 verified bit-exact with both strategies" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == [f"deepbench_gemm.{x}" for x in ("csv", "json", "md", "png")]
    doc = json.loads((out / "deepbench_gemm.json").read_text())
    assert [row["name"] for row in doc["rows"]] == ["gemm-device-4", "gemm-device-8"]
    assert doc["summary"]["failed"] == [] and doc["summary"]["board"] == "pynq"


def test_cli_bench_unknown_name_is_bad_input(tmp_path):
    r = cli("bench", "--only", "gemm-device-99", "--out", str(tmp_path / "b"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: unknown DeepBench operator")
    assert not (tmp_path / "b").exists()


def test_old_script_still_runs(tmp_path):
    script = str(ROOT / "scripts" / "deepbench_sweep.py")
    argv = [sys.executable, script, "--only", "gemm-device-4", "--out", str(tmp_path / "deepbench_gemm.csv")]
    r = subprocess.run(argv,
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "deepbench_gemm.csv").is_file() and (tmp_path / "deepbench_gemm.png").is_file()
