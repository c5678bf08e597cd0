"""The TEMPLATE family (embedcsp/targets/TEMPLATE/, docs/template-family.md): built in, it
compiles GEMMs and convolutions that verify bit-exact under every epilogue it offers and writes
bundles `embedcsp run` executes again; copied into a third party's package, renamed by a plain
text substitution and declared through an entry point, it compiles and verifies with no change
to embedcsp's core.

This file imports nothing from the template package: the core reaches it through the registry,
as it reaches any family."""

from __future__ import annotations

import ast
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import embedcsp
from embedcsp.bundle import read_bundle
from embedcsp.errors import BadInput, IsaError, NoEmbedding
from embedcsp.operator import conv2d, gemm
from embedcsp.pipeline import Options, compile_operator
from embedcsp.reference import Epilogue, accumulate, random_inputs
from embedcsp.targets import registry
from embedcsp.targets.family import Family

ROOT = Path(__file__).resolve().parents[1]
ISA = ROOT / "isa" / "template_mma_8x8x8.toml"
SOURCE = ROOT / "embedcsp" / "targets" / "TEMPLATE"


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "embedcsp.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def check(o) -> None:
    v = o.verification
    assert v.ok, v.first_mismatch
    assert v.checked == o.compiled.operator.output.size
    assert o.timing.cycles >= o.roofline.cycles
    # One MMA per instruction instance the embedding needs, each of the statement's MACs.
    assert v.counters.macs == o.compiled.embedding.padded_macs
    assert len(o.compiled.program) == 1 + v.counters.gemm_uops


@pytest.mark.parametrize("op", [
    gemm(30, 21, 50),
    gemm(1, 1, 1),
    gemm(17, 3, 129),
    conv2d(2, 5, 9, 7, 11, 3, 3, 1, 1, 2, 2),  # strided, padded, sizes off the lanes
    conv2d(1, 3, 6, 5, 9, 1, 1, 0, 0, 1, 1),  # pointwise
], ids=lambda op: op.describe().replace(" ", "_"))
def test_gemms_and_convs_verify_bit_exact(op):
    check(embedcsp.solve_and_verify(op, embedcsp.load_accelerator(ISA), Options(time_limit=5), seed=3))


@pytest.mark.parametrize("kind", ["int32", "wrap", "saturate"])
def test_every_epilogue_gives_the_ground_truth(kind):
    op = gemm(19, 13, 77)
    compiled = compile_operator(op, embedcsp.load_accelerator(ISA), Options(epilogue=Epilogue(kind)))
    inputs = random_inputs(op, 11)
    run = embedcsp.run(compiled, inputs)
    assert run.verification.ok, run.verification.first_mismatch
    exact = inputs["A"].astype(np.int64) @ inputs["B"].astype(np.int64)
    got = run.outputs["C"]
    want = {"int32": exact.astype(np.int32), "wrap": exact.astype(np.int8),
            "saturate": np.clip(exact, -128, 127).astype(np.int8)}[kind]
    assert got.dtype == want.dtype and np.array_equal(got, want)


@pytest.mark.parametrize("statement, lanes", [
    ("o[g,n,m] += w[g,k,n] * a[g,m,k]", "g = 2, m = 3, n = 5, k = 4"),
    ("c[] += a[k] * b[k]", "k = 6"),  # a dot product: a scalar output tile
])
def test_a_statement_in_any_dim_order_with_a_batched_dim(tmp_path, statement, lanes):
    """Operands whose dims are not in class order, a dim in all three, a scalar output: the
    tiles are stored class-major and the model transposes them to the statement's order."""
    isa = tmp_path / "odd.toml"
    isa.write_text(f'[accelerator]\nname = "odd"\nfamily = "TEMPLATE"\n'
                   f'[intrinsic]\nstatement = "{statement}"\nlanes = {{ {lanes} }}\n'
                   '[template_config]\nbytes_per_cycle = 8\nmacs_per_cycle = 64\n')
    acc = embedcsp.load_accelerator(isa)
    for op in (gemm(13, 9, 17), conv2d(1, 4, 5, 5, 7, 3, 3, 1, 1, 1, 1)):
        check(embedcsp.solve_and_verify(op, acc, Options(epilogue=Epilogue("saturate")), seed=2))


def test_bundle_round_trip_through_embedcsp_run(tmp_path):
    out = tmp_path / "b"
    r = cli("solve", "conv2d", "--n", "1", "--c", "3", "--h", "8", "--w", "7", "--k", "10", "--r", "3",
            "--s", "3", "--pad", "1", "--isa", str(ISA), "--epilogue", "wrap", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "verified" in r.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["isa"] == "TEMPLATE" and m["status"] == "verified"
    assert m["TEMPLATE"]["template_config"]["macs_per_cycle"] == 512
    assert (out / "program.bin").stat().st_size == 32 * m["insn_count"]
    r = cli("run", str(out), "--seed", "7", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["mismatches"] == 0 and doc["checked"] == 10 * 8 * 7
    # The same bundle, read in process: the model's reader decoded every record.
    b = read_bundle(out)
    assert len(b.program) == m["insn_count"] and b.family == "TEMPLATE"
    assert embedcsp.run_bundle(b, seed=9).ok


def test_a_damaged_bundle_is_refused_with_exit_2(tmp_path):
    out = tmp_path / "b"
    acc = embedcsp.load_accelerator(ISA)
    embedcsp.write_bundle(compile_operator(gemm(9, 10, 11), acc), out)
    raw = bytearray((out / "program.bin").read_bytes())
    raw[32 + 1] = 7  # an MMA with an unknown flag
    (out / "program.bin").write_bytes(bytes(raw))
    with pytest.raises(BadInput, match="record 1: flags"):
        read_bundle(out)
    (out / "program.bin").write_bytes(bytes(raw[:-32]))  # a record short of insn_count
    r = cli("run", str(out))
    assert r.returncode == 2 and "insn_count" in r.stderr and "Traceback" not in r.stderr


def test_every_member_of_the_protocol_is_there():
    fam = registry.family("TEMPLATE")
    wanted = [n for n, v in vars(Family).items() if inspect.isfunction(v) and not n.startswith("_")]
    wanted += list(Family.__annotations__)
    wanted += [n for n, v in vars(Family).items() if isinstance(v, property)]
    assert "bundle" in wanted
    for part in ("manifest_fields", "files", "read_config", "read_program", "run_image"):
        assert callable(getattr(fam.bundle, part)), f"the TEMPLATE bundle format lacks {part}"
    for name in wanted:
        assert hasattr(fam, name), f"the TEMPLATE family lacks {name}"
        if name in vars(Family) and inspect.isfunction(vars(Family)[name]):
            want = list(inspect.signature(vars(Family)[name]).parameters)[1:]
            assert list(inspect.signature(getattr(fam, name)).parameters)[:len(want)] == want, name


def test_what_the_family_refuses(tmp_path):
    acc = embedcsp.load_accelerator(ISA)
    assert compile_operator(gemm(8, 8, 8), acc).options.board == "generic"  # its default_board
    with pytest.raises(NoEmbedding, match="no reference mapping"):
        compile_operator(gemm(8, 8, 8), acc, Options(strategy="reference"))
    with pytest.raises(BadInput, match="requant"):
        compile_operator(gemm(8, 8, 8), acc, Options(epilogue=Epilogue("requant", 4, "floor")))
    with pytest.raises(BadInput, match="no board 'ultra96'"):
        registry.family("TEMPLATE").check_board("ultra96")
    bad = tmp_path / "bad.toml"
    bad.write_text(ISA.read_text().replace("macs_per_cycle = 512", "macs_per_cycle = 0"))
    with pytest.raises(IsaError, match=r"\[template_config\] macs_per_cycle must be a positive"):
        embedcsp.load_accelerator(bad)
    bad.write_text(ISA.read_text().replace("issue_cycles = 1", "clock = 1"))
    with pytest.raises(IsaError, match="unknown .*clock"):
        embedcsp.load_accelerator(bad)
    r = cli("isa", "show", str(ISA))
    assert r.returncode == 0 and "tiles" in r.stdout and "512 MACs/cycle" in r.stdout


# ---------------------------------------------------------------- a third party's family

@pytest.fixture
def mychip(tmp_path, monkeypatch):
    """The template copied into a site directory as `mychip_embedcsp`, renamed as its docstring
    says, and declared as an installed distribution with an `embedcsp.targets` entry point."""
    site = tmp_path / "site"
    package = site / "mychip_embedcsp"
    shutil.copytree(SOURCE, package, ignore=shutil.ignore_patterns("__pycache__"))
    for file in package.glob("*.py"):  # step 2: a plain text substitution
        file.write_text(file.read_text().replace("TEMPLATE", "mychip"))
    info = site / "mychip_embedcsp-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mychip-embedcsp\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[embedcsp.targets]\nmychip = mychip_embedcsp:FAMILY\n")
    isa = tmp_path / "mychip.toml"  # step 4
    isa.write_text(ISA.read_text().replace('"TEMPLATE"', '"mychip"').replace("template-mma", "mychip-mma"))
    monkeypatch.syspath_prepend(str(site))
    registry.registered.cache_clear()
    registry.family.cache_clear()
    yield site, isa
    registry.registered.cache_clear()
    registry.family.cache_clear()
    for name in [n for n in sys.modules if n == "mychip_embedcsp" or n.startswith("mychip_embedcsp.")]:
        del sys.modules[name]


def test_a_copied_template_is_a_third_party_family(mychip):
    site, isa = mychip
    assert "mychip" not in registry.BUILTIN  # found through the entry point alone
    assert registry.registered()["mychip"] == "mychip_embedcsp:FAMILY"
    fam = registry.family("mychip")
    assert fam.name == "mychip" and fam is not registry.family("TEMPLATE")
    assert Path(sys.modules[type(fam).__module__].__file__).is_relative_to(site)
    acc = embedcsp.load_accelerator(isa)
    assert acc.family == "mychip" and acc.config.tag().startswith("mychip")

    op = embedcsp.gemm(23, 17, 41)
    o = embedcsp.solve_and_verify(op, acc, embedcsp.Options(time_limit=5), seed=4)
    assert o.verification.ok, o.verification.first_mismatch
    inputs = random_inputs(op, 8)
    run = embedcsp.run(o.compiled, inputs)
    assert run.verification.ok
    assert np.array_equal(run.outputs["C"], accumulate(op, inputs))  # int32, the default epilogue
    # Every module of the compiled family came from the copy.
    assert type(o.compiled.program).__module__ == "mychip_embedcsp.build"


def test_a_copied_template_works_from_the_command_line(mychip, tmp_path):
    """A fresh interpreter with the site directory on its path finds the family by its entry
    point: `embedcsp solve ... --out` and `embedcsp run` work on the copy."""
    site, isa = mychip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "bundle"
    r = cli("solve", "gemm", "--m", "31", "--n", "9", "--k", "70", "--isa", str(isa), "--epilogue",
            "saturate", "--out", str(out), env=env)
    assert r.returncode == 0, r.stderr
    assert "on mychip-mma-8x8x8 (mychip 8x8x8" in r.stdout and "verified" in r.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["isa"] == "mychip" and "mychip" in m and m["status"] == "verified"
    r = cli("run", str(out), "--seed", "5", env=env)
    assert r.returncode == 0 and r.stdout.startswith("verified"), r.stdout + r.stderr


def test_this_file_imports_nothing_from_the_template():
    """The core reaches a family through the registry only; so do these tests."""
    tree = ast.parse(Path(__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names and not [n for n in names if "TEMPLATE" in n or "mychip" in n]


def test_the_model_carries_the_accumulator_across_its_batches():
    """The batched model gives the same image whether it runs all records at once or one at a
    time (every reduction then spans batches)."""
    from importlib import import_module

    fam = registry.family("TEMPLATE")
    model = import_module(type(fam).__module__ + ".model")  # the family's package, by the registry
    op = gemm(12, 20, 45)
    compiled = compile_operator(op, embedcsp.load_accelerator(ISA), Options(epilogue=Epilogue("wrap")))
    program_bin, image, _ = fam.bundle.files(compiled, random_inputs(op, 2))
    cfg = compiled.program.config
    whole, c1 = model.run(model.decode(program_bin, cfg), image, cfg)
    single, c2 = model.run(model.decode(program_bin, cfg), image, cfg, chunk_bytes=1)
    assert np.array_equal(whole, single) and c1 == c2 and c1.writebacks == 2 * 3
