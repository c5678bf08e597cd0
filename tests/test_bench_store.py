"""The bench's results store (resume, --fresh, keys, damage) and its engines (local, ray)."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_bench import ROWS, SMALL_SUITE, _variant_named_vta

from embedcsp import bench, bench_engines
from embedcsp.bench_store import RunKey, open_store
from embedcsp.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]
KEY = RunKey(accelerator_sha256="ab" * 32, board="pynq", seed=0, time_limit=10.0, version="0.0.0")


def cli(*args: str, python: tuple[str, ...] = ("-m", "embedcsp.cli")) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *python, *args], check=False, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def fake(monkeypatch):
    """test_bench's fake_bench with a difference: each row records which evaluation made it
    (`instructions` counts up), so a recomputed row is told from a stored one."""
    calls: list[tuple] = []

    def fake_evaluate(name, isa=None, time_limit=10.0, seed=0, board="pynq"):
        calls.append((name, seed, board))
        return dict(ROWS[0], name=name, board=board, instructions=len(calls))

    monkeypatch.setattr(bench, "evaluate", fake_evaluate)
    monkeypatch.setattr(bench, "names_for", lambda suite: list(SMALL_SUITE))
    return calls


def _names(calls) -> list[str]:
    return [c[0] for c in calls]


def _files(out: Path, stem: str) -> dict[str, bytes]:
    """The four files, with the one run-dependent figure (wall time) blanked."""
    got = {x: (out / f"{stem}{x}").read_bytes() for x in bench.SUFFIXES}
    doc = json.loads(got[".json"])
    doc["summary"]["wall_s"] = None
    got[".json"] = json.dumps(doc).encode()
    got[".md"] = b"\n".join(line for line in got[".md"].split(b"\n") if b"wall time" not in line)
    return got


# ---------------------------------------------------------------- the store itself


def test_rows_round_trip_by_key(tmp_path):
    row = dict(ROWS[3], roofline_efficiency=0.9412, speedup=None, ref_padded=True)
    with open_store(tmp_path / "s.sqlite") as store:
        store.put(KEY, "d", row)
        assert store.rows(KEY, ["d", "x"]) == {"d": row}
        for change in ({"seed": 1}, {"board": "ultra96"}, {"version": "0.0.1"}, {"time_limit": 5.0},
                       {"accelerator_sha256": "cd" * 32}):
            assert store.rows(RunKey(**{**KEY.__dict__, **change}), ["d"]) == {}
        assert store.rows(RunKey(**{**KEY.__dict__, "time_limit": 10}), ["d"]) == {"d": row}  # 10 == 10.0
        store.put(KEY, "d", dict(row, cycles=1))  # replaces
        assert store.rows(KEY, ["d"])["d"]["cycles"] == 1 and store.count() == 1
    with open_store(tmp_path / "s.sqlite") as store:  # reopened: still there, in WAL mode
        assert store.rows(KEY, ["d"])["d"]["cycles"] == 1
    assert sqlite3.connect(tmp_path / "s.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _writer(path: str, worker: int) -> None:
    with open_store(path) as store:
        for i in range(40):
            store.put(KEY, f"w{worker}-{i}", {"name": f"w{worker}-{i}", "i": i})


def test_concurrent_writers_keep_every_row(tmp_path):
    path = str(tmp_path / "s.sqlite")
    open_store(path).close()
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    procs = [context.Process(target=_writer, args=(path, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with open_store(path) as store:
        assert store.count() == 120
        assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("content, reason", [
    (b"this is no database, just text " * 200, "cannot read it"),
    (b"SQLite format 3\x00" + b"\xff" * 2000, "cannot read it"),
])
def test_a_damaged_store_is_bad_input(tmp_path, content, reason):
    path = tmp_path / "s.sqlite"
    path.write_bytes(content)
    with pytest.raises(BadInput, match=f"results store {path}: {reason}"):
        open_store(path)


def test_another_sqlite_file_is_not_a_store(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(BadInput, match="is an SQLite file but not a bench results store"):
        open_store(path)
    open_store(tmp_path / "s.sqlite").close()
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        db.execute("UPDATE meta SET value = 'embedcsp-bench-store/99'")
    with pytest.raises(BadInput, match="holds format 'embedcsp-bench-store/99'"):
        open_store(tmp_path / "s.sqlite")


# ---------------------------------------------------------------- run with the store


def test_the_files_are_those_of_the_old_path(tmp_path, fake):
    """Rows through the store give the same four files as rows written straight from evaluate."""
    out = tmp_path / "b"
    result = bench.run(bench.BenchConfig(suite="gemm", jobs=1, out=out))
    old = tmp_path / "old"
    old.mkdir()
    cfg = bench.BenchConfig(suite="gemm", board="pynq", jobs=1)
    rows = [bench._evaluate_safely(n, cfg) for n in SMALL_SUITE]
    for row, n in zip(rows, (4, 5, 6)):
        assert row["instructions"] == n
        row["instructions"] -= 3  # the same rows as the run's (its calls were 1..3)
    bench.write_all(rows, bench.summarize(rows, 0.0), old, "deepbench_gemm", result.selection,
                    cfg.provenance())
    assert _files(out, "deepbench_gemm") == _files(old, "deepbench_gemm")
    assert result.rows == rows and result.from_store == 0


def test_a_rerun_computes_nothing_and_writes_the_same_files(tmp_path, fake):
    out = tmp_path / "b"
    first = bench.run(bench.BenchConfig(suite="gemm", jobs=1, out=out))
    before = _files(out, "deepbench_gemm")
    assert _names(fake) == SMALL_SUITE and first.store == out / bench.STORE_NAME
    again = bench.run(bench.BenchConfig(suite="gemm", jobs=1, out=out))
    assert _names(fake) == SMALL_SUITE and again.from_store == 3 and again.rows == first.rows
    assert _files(out, "deepbench_gemm") == before
    more_jobs = bench.run(bench.BenchConfig(suite="gemm", jobs=2, out=out))  # jobs are no part of the key
    assert more_jobs.from_store == 3 and len(fake) == 3
    # A subset of the suite is served by the suite's rows, and a suite by a subset's.
    sub = bench.run(bench.BenchConfig(only=("gemm-device-8",), jobs=1, out=out))
    assert sub.from_store == 1 and len(fake) == 3


def test_fresh_recomputes_and_replaces(tmp_path, fake):
    out = tmp_path / "b"
    bench.run(bench.BenchConfig(suite="gemm", jobs=1, out=out))
    fresh = bench.run(bench.BenchConfig(suite="gemm", jobs=1, out=out, fresh=True))
    assert _names(fake) == SMALL_SUITE * 2 and fresh.from_store == 0
    assert [r["instructions"] for r in fresh.rows] == [4, 5, 6]
    again = bench.run(bench.BenchConfig(suite="gemm", jobs=1, out=out))
    assert len(fake) == 6 and [r["instructions"] for r in again.rows] == [4, 5, 6]  # the fresh rows


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, fake, monkeypatch):
    out = tmp_path / "b"
    real = bench.evaluate

    def interrupted(name, *args, **kw):
        if name == SMALL_SUITE[2]:
            raise KeyboardInterrupt
        return real(name, *args, **kw)

    monkeypatch.setattr(bench, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench.run(bench.BenchConfig(suite="gemm", jobs=1, out=out))
    assert sorted(p.name for p in out.iterdir()) == [bench.STORE_NAME]  # no result files, two rows
    monkeypatch.setattr(bench, "evaluate", real)
    done = bench.run(bench.BenchConfig(suite="gemm", jobs=1, out=out))
    assert _names(fake) == SMALL_SUITE  # each computed once: the third only on the rerun
    assert done.from_store == 2 and [r["name"] for r in done.rows] == SMALL_SUITE


def test_an_interrupt_in_a_worker_process_stops_the_run(tmp_path, fake, monkeypatch):
    """The local engine with worker processes (forked, so they see the fake): a KeyboardInterrupt
    in one stops the run; whatever finished is stored and the rerun computes only the rest."""
    if multiprocessing.get_start_method() != "fork":
        pytest.skip("the workers see the fake evaluate only when forked")
    out = tmp_path / "b"
    real = bench.evaluate

    def interrupted(name, *args, **kw):
        if name == SMALL_SUITE[0]:
            raise KeyboardInterrupt
        return real(name, *args, **kw)

    monkeypatch.setattr(bench, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench.run(bench.BenchConfig(suite="gemm", jobs=2, out=out))
    with open_store(out / bench.STORE_NAME) as store:
        key = bench.BenchConfig(suite="gemm").run_key(bench.BenchConfig(suite="gemm").selection())
        stored = store.rows(key, SMALL_SUITE)
    assert SMALL_SUITE[0] not in stored
    monkeypatch.setattr(bench, "evaluate", real)
    done = bench.run(bench.BenchConfig(suite="gemm", jobs=1, out=out))
    assert done.from_store == len(stored) and _names(fake) == [n for n in SMALL_SUITE if n not in stored]


def test_rows_that_say_nothing_about_the_operator_are_not_stored(tmp_path, fake, monkeypatch):
    out = tmp_path / "b"
    monkeypatch.setattr(bench, "evaluate", lambda *a, **k: 1 / 0)
    broken = bench.run(bench.BenchConfig(only=("gemm-device-4",), jobs=1, out=out))
    assert broken.rows[0]["error"].startswith("internal error: ZeroDivisionError") and not broken.ok
    with open_store(out / bench.STORE_NAME) as store:
        assert store.count() == 0


def test_the_code_version_hashes_the_sources():
    from embedcsp.__about__ import __version__
    from embedcsp.bench_store import code_version

    release, _, digest = code_version().partition("+")
    assert release == __version__ and len(digest) == 12 and int(digest, 16) >= 0


@pytest.mark.parametrize("change", [{"seed": 1}, {"board": "ultra96"}, {"isa": _variant_named_vta},
                                    {"time_limit": 5.0}, {"version": "999.0"}])
def test_a_key_change_recomputes(tmp_path, fake, monkeypatch, change):
    store = tmp_path / "shared.sqlite"  # one store, an --out per run (the files of one would refuse the other)
    bench.run(bench.BenchConfig(only=("gemm-device-4",), jobs=1, out=tmp_path / "a", store=store))
    bench.run(bench.BenchConfig(only=("gemm-device-4",), jobs=1, out=tmp_path / "a2", store=store))
    assert len(fake) == 1
    change = {k: v(tmp_path) if callable(v) else v for k, v in change.items()}
    if "version" in change:  # a new release, or the same release with other sources
        monkeypatch.setattr(bench, "code_version", lambda v=change.pop("version"): v)
    other = bench.run(bench.BenchConfig(only=("gemm-device-4",), jobs=1, out=tmp_path / "b", store=store,
                                        **change))
    assert len(fake) == 2 and other.from_store == 0
    with open_store(store) as s:
        assert s.count() == 2  # both kept


# ---------------------------------------------------------------- engines and the command


def test_engine_options_are_checked_before_any_work(tmp_path, fake, monkeypatch):
    with pytest.raises(BadInput, match="--address is for --engine ray"):
        bench.run(bench.BenchConfig(only=("gemm-device-4",), out=tmp_path / "b", address="auto"))
    with pytest.raises(BadInput, match="unknown engine 'dask'"):
        bench.run(bench.BenchConfig(only=("gemm-device-4",), out=tmp_path / "b", engine="dask"))
    monkeypatch.setattr(bench_engines, "ray_available", lambda: False)
    with pytest.raises(BadInput, match=r"--engine ray needs Ray, which is not installed: pip install"):
        bench.run(bench.BenchConfig(only=("gemm-device-4",), out=tmp_path / "b", engine="ray"))
    assert fake == [] and not (tmp_path / "b").exists()


def test_cli_damaged_store_and_missing_ray_are_one_line_errors(tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / bench.STORE_NAME).write_text("not a database " * 100)
    r = cli("bench", "--only", "gemm-device-4", "--out", str(out))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"error: results store {out / bench.STORE_NAME}: cannot read it")
    block_ray = ("import sys; sys.modules['ray'] = None; sys.argv[0] = 'embedcsp'; "
                 "from embedcsp.cli import main; main()")
    r = cli("bench", "--only", "gemm-device-4", "--out", str(tmp_path / "c"), "--engine", "ray", python=("-c", block_ray))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--engine ray needs Ray, which is not installed: pip install 'embedcsp[ray]'" in r.stderr


TIMING = ("solve_s", "verify_s")
REAL = ["gemm-device-4", "gemm-device-8"]


def _untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory) -> list[dict]:
    """Two real operators on the local engine with worker processes, then again from the store."""
    out = tmp_path_factory.mktemp("local")
    cfg = bench.BenchConfig(only=tuple(REAL), jobs=2, out=out, time_limit=5)
    first = bench.run(cfg)
    assert first.ok and first.from_store == 0
    again = bench.run(cfg)
    assert again.from_store == 2 and again.rows == first.rows
    return first.rows


def test_real_run_is_stored_and_reused(local_rows):
    assert [r["name"] for r in local_rows] == REAL and all(bench.row_ok(r) for r in local_rows)


def test_ray_engine_gives_the_local_rows(tmp_path, local_rows):
    pytest.importorskip("ray")
    cfg = bench.BenchConfig(only=tuple(REAL), jobs=2, out=tmp_path / "ray", time_limit=5, engine="ray")
    result = bench.run(cfg)
    assert result.from_store == 0 and _untimed(result.rows) == _untimed(local_rows)
