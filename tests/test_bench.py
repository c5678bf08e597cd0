"""The benchmark harness: rows from both strategies, the summary's figures, the four writers, the CLI."""

from __future__ import annotations

import csv
import json
import re
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


def test_one_program_is_verified_once_and_another_twice(monkeypatch):
    """Where ours is the reference's own embedding the two strategies share one check; where
    the cycle model chose another, each program runs in the functional model."""
    runs = []
    real = bench.verify_and_cost

    def counting(compiled, seed=0, progress=None, same_program=None):
        outcome = real(compiled, seed, same_program=same_program)
        runs.append(same_program is None or outcome.verification is not same_program.verification)
        return outcome

    monkeypatch.setattr(bench, "verify_and_cost", counting)
    row = bench.evaluate(gemm(96, 160, 512), time_limit=5)  # the reference's mapping is as fast
    assert row["ref_same_program"] is True and runs == [True, False] and row["speedup"] == 1.0
    runs.clear()
    row = bench.evaluate(gemm(35, 70, 64), time_limit=5)  # ours pads less than the reference
    assert row["ref_same_program"] is False and runs == [True, True] and row["speedup"] > 1.0
    assert row["verified"] is True and row["ref_verified"] is True


def test_evaluate_by_deepbench_name():
    row = bench.evaluate("GEMM-device-4", time_limit=5)
    assert (row["name"], row["M"], row["N"], row["K"]) == ("gemm-device-4", 64, 1, 1216)
    assert bench.row_ok(row) and row["ref_padded"] is False


def test_reference_error_is_a_column_not_a_crash(monkeypatch):
    real = bench.compile_operator

    def no_reference(op, acc, options, progress=None):
        if options.strategy == "reference":
            raise BadInput("the reference strategy exists for gemm only")
        return real(op, acc, options)

    monkeypatch.setattr(bench, "compile_operator", no_reference)
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


# ---------------------------------------------------------------- naming and the no-overwrite rule


def test_suite_and_subset_names():
    acc = dict(accelerator="vta", accelerator_sha256="ab" * 32, board="pynq", seed=0)
    suite = bench.Selection(suite="gemm", operators=("gemm-device-4",), **acc)
    assert (suite.stem, suite.title, suite.short_title) == ("deepbench_gemm", "DeepBench gemm", "DeepBench gemm")
    one = bench.BenchConfig(only=("GEMM-server-2",)).selection()
    assert one.suite is None and one.operators == ("gemm-server-2",)
    assert one.stem == "deepbench_subset-" + bench.subset_tag(["gemm-server-2"]) and len(one.stem) == 25
    assert one.title == "DeepBench subset (1 operator: gemm-server-2)"
    # Order, case and repeats do not change the name; another set does.
    a = bench.BenchConfig(only=("gemm-device-4", "gemm-device-8")).selection()
    b = bench.BenchConfig(only=("GEMM-DEVICE-8", "gemm-device-4", "gemm-device-8")).selection()
    assert a.stem == b.stem and a.operators != b.operators and a.differences(b.as_dict()) == []
    assert bench.BenchConfig(only=("gemm-device-4",)).selection().stem != a.stem
    many = bench.BenchConfig(only=tuple(f"gemm-device-{i}" for i in range(1, 7))).selection()
    assert many.title == ("DeepBench subset (6 operators: gemm-device-1, gemm-device-2, gemm-device-3, "
                          "gemm-device-4, and 2 more)")
    # The whole suite is named by the suite, and --only wins over --suite.
    assert bench.BenchConfig(suite="all").selection().stem == "deepbench_all"
    assert bench.BenchConfig(suite="gemm", only=("gemm-device-4",)).selection().suite is None


def test_selection_records_what_it_ran_on():
    from embedcsp.__about__ import __version__
    from embedcsp.accelerator import load_accelerator

    cfg = bench.BenchConfig(only=("gemm-device-4",), board="ultra96", seed=7,
                            isa=str(ROOT / "isa" / "vta_b2_i8_o32.toml"))
    d = cfg.selection().as_dict()
    assert d["accelerator"] == "vta-b2-i8-o32"
    assert d["accelerator_sha256"] == load_accelerator(cfg.isa).digest != load_accelerator().digest
    assert (d["suite"], d["operators"], d["board"], d["seed"]) == (None, ["gemm-device-4"], "ultra96", 7)
    assert cfg.provenance()["embedcsp"] == __version__


SMALL_SUITE = ["gemm-device-4", "gemm-device-8", "gemm-server-2"]


@pytest.fixture
def fake_bench(monkeypatch):
    """Rows without compiling anything, a three-operator 'gemm' suite; counts the evaluations."""
    calls: list[str] = []

    def fake_evaluate(name, isa=None, time_limit=10.0, seed=0, board="pynq"):
        calls.append(name)
        return dict(ROWS[0], name=name, board=board)

    monkeypatch.setattr(bench, "evaluate", fake_evaluate)
    monkeypatch.setattr(bench, "names_for", lambda suite: list(SMALL_SUITE))
    return calls


def _digests(out: Path, stem: str) -> dict[str, bytes]:
    return {x: (out / f"{stem}{x}").read_bytes() for x in bench.SUFFIXES}


def test_subset_never_overwrites_the_suite(tmp_path, fake_bench, monkeypatch):
    out = tmp_path / "bench"
    full = bench.run(bench.BenchConfig(suite="gemm", jobs=1, out=out))
    assert [f.name for f in full.files] == [f"deepbench_gemm{x}" for x in bench.SUFFIXES]
    before = _digests(out, "deepbench_gemm")
    doc = json.loads((out / "deepbench_gemm.json").read_text())
    assert doc["format"] == "embedcsp-bench/1" and doc["selection"]["suite"] == "gemm"
    assert doc["selection"]["operators"] == SMALL_SUITE and doc["run"]["embedcsp"] and "+" in doc["run"]["code_version"]

    sub = bench.run(bench.BenchConfig(suite="gemm", only=("gemm-server-2",), jobs=1, out=out))
    stem = sub.selection.stem
    assert stem.startswith("deepbench_subset-") and sub.note is None
    assert _digests(out, "deepbench_gemm") == before  # byte-identical
    doc = json.loads((out / f"{stem}.json").read_text())
    assert doc["selection"]["suite"] is None and [r["name"] for r in doc["rows"]] == ["gemm-server-2"]
    md = (out / f"{stem}.md").read_text()
    assert md.startswith("# DeepBench subset (1 operator: gemm-server-2)\n") and "Selection: subset of 1" in md

    # The same selection again replaces its own files, and nothing else is written.
    again = bench.run(bench.BenchConfig(only=("GEMM-SERVER-2",), jobs=1, out=out))
    assert again.files == sub.files and _digests(out, "deepbench_gemm") == before
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"deepbench_gemm{x}" for x in bench.SUFFIXES] + [f"{stem}{x}" for x in bench.SUFFIXES]
        + [bench.STORE_NAME])
    assert fake_bench == SMALL_SUITE  # the subset's row, and its rerun's, came from the store

    # A whole-suite run of the same suite may refresh its files even if the suite's list changed.
    monkeypatch.setattr(bench, "names_for", lambda suite: SMALL_SUITE[:2])
    assert bench.run(bench.BenchConfig(suite="gemm", jobs=1, out=out)).files == full.files


def _variant_named_vta(tmp_path) -> str:
    """Another VTA description under the default's name: the same stem, another digest."""
    text = (ROOT / "isa" / "vta_b2_i8_o32.toml").read_text()
    file = tmp_path / "renamed.toml"
    file.write_text(re.sub(r'(?m)^name\s*=.*$', 'name = "vta"', text, count=1))
    return str(file)


@pytest.mark.parametrize("change", [
    {"seed": 1},
    {"board": "ultra96"},
    {"isa": _variant_named_vta},
])
def test_another_selection_is_refused_before_any_work(tmp_path, fake_bench, change):
    change = {k: v(tmp_path) if callable(v) else v for k, v in change.items()}
    out = tmp_path / "b"
    bench.run(bench.BenchConfig(only=("gemm-device-4",), jobs=1, out=out))
    stem = bench.BenchConfig(only=("gemm-device-4",)).selection().stem
    before, calls = _digests(out, stem), len(fake_bench)
    with pytest.raises(BadInput, match=f"will not overwrite .*{stem}.*holds another selection"):
        bench.run(bench.BenchConfig(only=("gemm-device-4",), jobs=1, out=out, **change))
    assert len(fake_bench) == calls and _digests(out, stem) == before


def test_another_accelerator_writes_beside_the_default(tmp_path, fake_bench):
    out = tmp_path / "b"
    vta = bench.run(bench.BenchConfig(only=("gemm-device-4",), jobs=1, out=out))
    other = bench.run(bench.BenchConfig(only=("gemm-device-4",), jobs=1, out=out,
                                        isa=str(ROOT / "isa" / "vta_b2_i8_o32.toml")))
    assert vta.selection.stem.startswith("deepbench_subset-")
    assert other.selection.stem == "vta-b2-i8-o32_" + vta.selection.stem and other.note is None
    assert other.selection.title.endswith(" on vta-b2-i8-o32")


@pytest.mark.parametrize("damage, reason", [
    (lambda out: (out / "deepbench_gemm.json").write_text(json.dumps({"summary": {}, "rows": []})),
     "records no selection"),
    (lambda out: (out / "deepbench_gemm.json").write_text("{not json"), "not a readable bench result"),
    (lambda out: (out / "deepbench_gemm.csv").write_text("name\n"), "exists without deepbench_gemm.json"),
    (lambda out: (out / "deepbench_gemm.json").write_text(json.dumps(
        {"selection": {"suite": None, "operators": SMALL_SUITE, "board": "pynq", "seed": 0}})),
     "it holds a subset of 3, this run is suite gemm"),
])
def test_files_bench_cannot_vouch_for_are_left_alone(tmp_path, fake_bench, damage, reason):
    out = tmp_path / "b"
    out.mkdir()
    damage(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(BadInput, match=reason):
        bench.run(bench.BenchConfig(suite="gemm", jobs=1, out=out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and fake_bench == []


def test_a_conflict_that_appears_during_the_run_goes_to_a_free_name(tmp_path, fake_bench, monkeypatch):
    out = tmp_path / "b"
    real = bench.evaluate

    def meanwhile(name, *args, **kw):  # another run writes the stem with another seed
        (out / "deepbench_gemm.json").write_text(json.dumps({"selection": {"suite": "gemm", "seed": 5}}))
        return real(name, *args, **kw)

    monkeypatch.setattr(bench, "evaluate", meanwhile)
    result = bench.run(bench.BenchConfig(suite="gemm", jobs=1, out=out))
    assert [f.name for f in result.files] == [f"deepbench_gemm-2{x}" for x in bench.SUFFIXES]
    assert "seed 5, this run 0" in result.note and "wrote deepbench_gemm-2.*" in result.note
    assert json.loads((out / "deepbench_gemm.json").read_text())["selection"]["seed"] == 5
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


# ---------------------------------------------------------------- the command


def test_cli_bench_writes_four_files(tmp_path):
    out = tmp_path / "b"
    r = cli("bench", "--suite", "gemm", "--only", "gemm-device-4", "gemm-device-8", "--jobs", "2",
            "--out", str(out), "--time-limit", "5")
    assert r.returncode == 0, r.stderr
    assert "DeepBench subset (2 operators: gemm-device-4, gemm-device-8) on pynq: 2 operators, " \
           "2 verified bit-exact with both strategies" in r.stdout
    stem = "deepbench_subset-" + bench.subset_tag(["gemm-device-4", "gemm-device-8"])
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}.{x}" for x in ("csv", "json", "md", "png")] + \
        [bench.STORE_NAME]
    assert "results store " + str(out / bench.STORE_NAME) + ": 0 of 2 rows from the store, 2 computed" in r.stdout
    doc = json.loads((out / f"{stem}.json").read_text())
    assert [row["name"] for row in doc["rows"]] == ["gemm-device-4", "gemm-device-8"]
    assert doc["summary"]["failed"] == [] and doc["summary"]["board"] == "pynq"
    assert doc["selection"]["operators"] == ["gemm-device-4", "gemm-device-8"]


def test_cli_subset_leaves_the_committed_baseline_alone(tmp_path):
    """The bug this guards against: `bench --only X` replaced bench/deepbench_all.* with one row."""
    out = tmp_path / "bench"
    out.mkdir()
    for x in bench.SUFFIXES:  # the committed baseline: suite all, shipped VTA, pynq, seed 0
        (out / f"deepbench_all{x}").write_bytes((ROOT / "bench" / f"deepbench_all{x}").read_bytes())
    before = _digests(out, "deepbench_all")
    for _ in range(2):
        r = cli("bench", "--only", "gemm-device-4", "--out", str(out), "--time-limit", "5")
        assert r.returncode == 0, r.stderr
    assert _digests(out, "deepbench_all") == before
    r = cli("bench", "--suite", "all", "--board", "ultra96", "--out", str(out))  # refused, nothing computed
    assert r.returncode == 2 and "board pynq, this run ultra96" in r.stderr and r.stderr.count("\n") == 1
    assert _digests(out, "deepbench_all") == before


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
    stem = "deepbench_subset-" + bench.subset_tag(["gemm-device-4"])  # named operators: a subset's files
    assert (tmp_path / f"{stem}.csv").is_file() and (tmp_path / f"{stem}.png").is_file()


def test_the_committed_baseline_is_never_slower_and_never_above_the_roofline():
    """bench/deepbench_all.csv is what later work is compared against: every row verified with
    both strategies, ours never slower than the reference, no efficiency above its bound."""
    import csv
    from pathlib import Path

    rows = list(csv.DictReader(open(Path(__file__).parent.parent / "bench" / "deepbench_all.csv")))
    assert len(rows) == 206
    assert all(r["verified"] == "True" and r["ref_verified"] == "True" for r in rows)
    assert min(float(r["speedup"]) for r in rows) >= 1.0
    assert max(float(r["roofline_efficiency"]) for r in rows) <= 1.0
    assert max(float(r["ref_roofline_efficiency"]) for r in rows) <= 1.0
