"""The Gemmini family end to end: GEMMs and convs compiled, run as program.bin in the functional
model and compared bit for bit with numpy, on both shipped Gemmini files, both strategies, all
three epilogues, both dataflows; the batched model against the per-command model; bundles
written, read back and re-run; program.bin against hand-worked commands; cycles >= roofline."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedcsp.accelerator import load_accelerator
from embedcsp.bundle import read_bundle, run_bundle, write_bundle
from embedcsp.errors import BadInput, ProgramError
from embedcsp.operator import conv2d, gemm
from embedcsp.pipeline import Options, compile_operator, host_transforms
from embedcsp.reference import Epilogue, random_inputs, reference_output
from embedcsp.targets.gemmini import FAMILY
from embedcsp.targets.gemmini.batch import run_entries
from embedcsp.targets.gemmini.build import best_program
from embedcsp.targets.gemmini.codegen import DRAM_BASE, dram_image, generate
from embedcsp.targets.gemmini.decode import decode_program, read_entries
from embedcsp.targets.gemmini.model import run
from embedcsp.targets.gemmini.plan import OS, WS, Plan, Tiling, axes, os_chain
from embedcsp.targets.registry import family
from embedcsp.verify import run_program

ROOT = Path(__file__).resolve().parent.parent
ISA16 = load_accelerator(ROOT / "isa" / "gemmini.toml")
ISA8 = load_accelerator(ROOT / "isa" / "gemmini_dim8.toml")
SAT, INT32 = Epilogue("saturate"), Epilogue("int32")
REQ = Epilogue("requant", 6, "nearest_even")


def check(compiled, seed: int = 0):
    """Run the compiled program and compare every output with numpy; the cycle model is at least
    the roofline. Returns the outputs."""
    inputs = random_inputs(compiled.operator, seed)
    ran = run_program(compiled, inputs)
    want = reference_output(compiled.operator, inputs, compiled.options.epilogue)
    got = ran.outputs[compiled.operator.output.name]
    assert ran.verification.ok, ran.verification.first_mismatch
    assert got.dtype == want.dtype and np.array_equal(got, want)
    fam = family("gemmini")
    assert fam.cost(compiled).cycles >= fam.roofline(compiled).cycles
    return ran


def solve(op, acc=ISA16, epilogue=SAT, strategy="csp"):
    return compile_operator(op, acc, Options(epilogue=epilogue, strategy=strategy, time_limit=10))


GEMMS = [(35, 70, 64), (1, 5, 3), (37, 19, 50), (16, 16, 16)]
CONVS = [
    (1, 3, 12, 12, 20, 3, 3, 1, 1, 1, 1),    # a C = 3 first layer, padded
    (2, 19, 11, 9, 33, 3, 5, 1, 2, 2, 2),    # strided, padded, odd sizes
    (1, 8, 9, 9, 17, 1, 1, 0, 0, 2, 2),      # 1x1 with stride 2: data the windows skip
]


@pytest.mark.parametrize("acc", [ISA16, ISA8], ids=["dim16", "dim8"])
@pytest.mark.parametrize("strategy", ["csp", "reference"])
@pytest.mark.parametrize("shape", GEMMS, ids=lambda s: "x".join(map(str, s)))
def test_gemm_verifies(acc, strategy, shape):
    check(solve(gemm(*shape), acc, strategy=strategy))


@pytest.mark.parametrize("epilogue", [SAT, REQ, INT32], ids=lambda e: e.name)
@pytest.mark.parametrize("acc", [ISA16, ISA8], ids=["dim16", "dim8"])
def test_epilogues(acc, epilogue):
    c = solve(gemm(29, 40, 77), acc, epilogue)
    out = check(c).outputs["C"]
    assert out.dtype == (np.int32 if epilogue.kind == "int32" else np.int8)


@pytest.mark.parametrize("acc", [ISA16, ISA8], ids=["dim16", "dim8"])
@pytest.mark.parametrize("strategy", ["csp", "reference"])
@pytest.mark.parametrize("shape", CONVS, ids=["c3", "strided", "1x1s2"])
def test_conv_verifies(acc, strategy, shape):
    epilogue = REQ if shape[1] == 19 else SAT
    check(solve(conv2d(*shape), acc, epilogue, strategy))


def test_reference_pins_the_library_mapping():
    c = solve(conv2d(*CONVS[0]), strategy="reference")
    groups = {g.role: g.dims for g in c.embedding.groups}
    assert groups["row"] == ("n", "p", "q") and groups["col"] == ("k",) and groups["red"] == ("c",)
    assert {lp.dim for lp in c.embedding.loops} == {"r", "s"}
    g = solve(gemm(35, 70, 64), strategy="reference")
    assert dict(g.embedding.binding) == {"a": "A", "b": "B", "c": "C"}
    assert [gr.dims for gr in g.embedding.groups] == [("m",), ("n",), ("k",)]


@pytest.mark.parametrize("acc", [ISA16, ISA8], ids=["dim16", "dim8"])
@pytest.mark.parametrize("dataflow", [WS, OS])
@pytest.mark.parametrize("epilogue", [SAT, INT32], ids=lambda e: e.name)
def test_both_dataflows(acc, dataflow, epilogue):
    """Each dataflow forced, single- and double-buffered, verified; OS chains at DIM = 8 sum
    three computes in the array (24 products, within the 20-bit limit)."""
    c = solve(gemm(45, 37, 150), acc, epilogue)
    for double in (True, False):
        plan, program = best_program(c.embedding, epilogue, "chipyard", 2, double, (dataflow,))
        assert plan.tiling.dataflow == dataflow and plan.tiling.slots == (2 if double else 1)
        if dataflow == OS:
            assert plan.tiling.chain == os_chain(acc.config) == (3 if acc.config.DIM == 8 else 1)
        check(replace(c, plan=plan, program=program))


def test_tilings_with_reuse_and_several_reduction_tiles():
    """Small tiles force A and B reloads, reuse across steps and partial edge tiles."""
    c = solve(gemm(70, 90, 100), ISA8, SAT)
    rows, cols, reds = axes(c.embedding)
    for t in (Tiling(2, 3, 4, "row", 2, WS), Tiling(3, 2, 13, "col", 2, WS), Tiling(4, 4, 3, "col", 1, OS, 3),
              Tiling(5, 1, 13, "row", 2, OS, 2), Tiling(9, 7, 2, "row", 1, WS)):
        plan = Plan(c.embedding, ISA8.config, rows, cols, reds, t, 1)
        check(replace(c, plan=plan, program=generate(plan, SAT)))
    with pytest.raises(ValueError, match="does not fit"):
        generate(Plan(c.embedding, ISA8.config, rows, cols, reds, Tiling(9, 12, 2, "row", 1, WS), 1), SAT)


# ---------------------------------------------------------------- the batched model

def _mutations(rng, program_bytes: bytes, count: int):
    """Programs with one descriptor field of one command changed."""
    words = np.frombuffer(program_bytes, "<u8").reshape(-1, 3).copy()
    for _ in range(count):
        w = words.copy()
        pc = int(rng.integers(5, len(w)))
        reg = int(rng.integers(1, 3))
        shift = int(rng.choice([0, 4, 29, 30, 31, 32, 48]))
        w[pc, reg] ^= np.uint64(1 << shift)
        yield w.tobytes()


@pytest.mark.parametrize("acc", [ISA16, ISA8], ids=["dim16", "dim8"])
def test_batched_model_equals_per_command_model(acc):
    """Random small programs (random shapes, tilings, dataflows, epilogues) and single-bit
    corruptions of them: the batched run gives the per-command run's image and counters, or
    the same refusal."""
    rng = np.random.default_rng(7)
    cfg = acc.config
    for trial in range(6):
        m, n, k = (int(v) for v in rng.integers(1, 60, 3))
        epilogue = [SAT, REQ, INT32][trial % 3]
        c = solve(gemm(m, n, k), acc, epilogue)
        rows, cols, reds = axes(c.embedding)
        flow = [WS, OS][trial % 2]
        t = Tiling(int(rng.integers(1, rows.n + 1)), int(rng.integers(1, cols.n + 1)),
                   int(rng.integers(1, reds.n + 1)), ["row", "col"][trial % 2], 1 + trial % 2, flow,
                   os_chain(cfg) if flow == OS else 1)
        plan = Plan(c.embedding, cfg, rows, cols, reds, t, 4 if epilogue.kind == "int32" else 1)
        program = generate(plan, epilogue)
        dram = dram_image(program, random_inputs(c.operator, trial))
        raw = program.to_bytes()
        for variant in [raw, *_mutations(rng, raw, 6)]:
            results = []
            for batched in (False, True):
                try:
                    if batched:
                        results.append(run_entries(read_entries(variant), dram, DRAM_BASE, cfg))
                    else:
                        results.append(run(decode_program(variant), dram, DRAM_BASE, cfg))
                except (ProgramError, ValueError) as exc:
                    results.append(str(exc))
            (a, b) = results
            if isinstance(a, str) or isinstance(b, str):
                assert a == b
            else:
                assert np.array_equal(a[0], b[0]) and a[1].as_dict() == b[1].as_dict()


# ---------------------------------------------------------------- program.bin and bundles

def test_program_bin_is_the_hand_worked_stream():
    """A 16x16x16 GEMM in one WS tile, double-buffered: A at scratchpad row 0, B at row 32
    (after two A slots), C at accumulator row 0; A, B, C regions one page apart from 0x1000."""
    c = solve(gemm(16, 16, 16), strategy="reference")
    rows, cols, reds = axes(c.embedding)
    plan = Plan(c.embedding, ISA16.config, rows, cols, reds, Tiling(1, 1, 1, "row", 2, WS), 1)
    raw = generate(plan, SAT).to_bytes()
    want = [
        (7, 0, 0),                                        # flush
        (0, 0x3F80000000010004, 0x0001000000000000),      # config_ex WS, a_stride 1, c_stride 1
        (0, 0x3F80000000100101, 16),                      # config_ld slot 0: 16 B rows, block stride 16
        (0, 0x3F80000000100109, 16),                      # config_ld slot 1
        (0, 0x0000000000000002, 0x3F80000000000010),      # config_st: 16 B rows, scale 1.0
        (2, 0x1000, 0x0010001000000000),                  # mvin A -> sp row 0, 16x16
        (1, 0x2000, 0x0010001000000020),                  # mvin2 B -> sp row 32
        (6, 0x0010001000000020, 0x0010001080000000),      # preload B; C = acc row 0, overwrite
        (4, 0x0010001000000000, 0x00100010FFFFFFFF),      # compute_preloaded A; D = GARBAGE
        (3, 0x3000, 0x0010001080000000),                  # mvout acc row 0 as int8
    ]
    assert raw == b"".join(struct.pack("<3Q", *w) for w in want)
    check(replace(c, plan=plan, program=generate(plan, SAT)))


@pytest.mark.parametrize("epilogue", [SAT, INT32], ids=lambda e: e.name)
def test_bundle_round_trip(tmp_path, epilogue):
    c = solve(conv2d(*CONVS[1]), ISA8, epilogue)
    inputs = random_inputs(c.operator, 3)
    ver = run_program(c, inputs).verification
    write_bundle(tmp_path, c, inputs, 3, ver, host_transforms(c))
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert doc["isa"] == "gemmini" and doc["dram_base"] == DRAM_BASE
    assert doc["gemmini_config"] == ISA8.config.as_dict()
    assert doc["epilogue"] == epilogue.manifest()
    assert (tmp_path / "program.bin").stat().st_size == 24 * doc["command_count"]
    bundle = read_bundle(tmp_path)
    for seed in (3, 11):
        assert run_bundle(bundle, seed).ok
    result = CliRunner().invoke(__import__("embedcsp.cli", fromlist=["app"]).app, ["run", str(tmp_path)])
    assert result.exit_code == 0, result.output


def test_bundle_refuses_a_move_outside_dram(tmp_path):
    c = solve(gemm(20, 20, 20))
    inputs = random_inputs(c.operator, 0)
    write_bundle(tmp_path, c, inputs, 0, None, host_transforms(c))
    doc = json.loads((tmp_path / "manifest.json").read_text())
    good = (tmp_path / "program.bin").read_bytes()
    doc["dram_base"] = DRAM_BASE + 64
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(BadInput, match="outside dram.bin"):
        read_bundle(tmp_path)
    doc["dram_base"] = DRAM_BASE
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    bad = bytearray(good)
    bad[24 * 6] = 9  # a loop command: outside the subset
    (tmp_path / "program.bin").write_bytes(bytes(bad))
    with pytest.raises(BadInput, match="command 6: funct7 9"):
        read_bundle(tmp_path)
    (tmp_path / "program.bin").write_bytes(good[:-24])
    with pytest.raises(BadInput, match="command_count"):
        read_bundle(tmp_path)


# ---------------------------------------------------------------- the family seam

def test_family_protocol_and_refusals():
    fam = family("gemmini")
    assert fam is FAMILY and fam.forms == () and fam.epilogues[0] == "saturate"
    for member in ("load", "describe", "check_board", "reference_pins", "build", "execute", "cost",
                   "roofline"):
        assert callable(getattr(fam, member))
    for part in ("program_lines", "program_fields", "bench_columns"):
        assert callable(getattr(fam.report, part))
    for part in ("manifest_fields", "files", "read_config", "read_program", "run_image"):
        assert callable(getattr(fam.bundle, part))
    assert ISA16.pattern.statement() == "c[i,j] += a[i,k] * b[k,j]"
    assert ISA8.pattern.extents == {"i": 8, "j": 8, "k": 8}
    assert any("scratchpad 16384 rows" in line for line in fam.describe(ISA16))
    with pytest.raises(BadInput):
        fam.check_board("ultra96")
    for bad in (Epilogue("wrap"), Epilogue("requant", 4, "floor")):
        with pytest.raises(BadInput):
            solve(gemm(8, 8, 8), epilogue=bad)
    c = solve(gemm(35, 70, 64))
    assert len(c.program.element_maps) == 3 and set(c.program.element_maps) == {"a", "b", "c"}
    assert [t.tensor for t in host_transforms(c)] == ["A", "B"]
    assert dram_image(c.program, random_inputs(c.operator, 0)).size == c.program.dram_size
