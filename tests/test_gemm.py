"""GEMM end to end: the solver's choice, the compiled program, bit-exact results on random data."""

from __future__ import annotations

import numpy as np
import pytest

from embedcsp.accelerator import load_accelerator
from embedcsp.bundle import read_bundle, run_bundle, write_bundle
from embedcsp.embedding import check_scalar
from embedcsp.operator import gemm
from embedcsp.pipeline import Options, compile_operator, solve_and_verify
from embedcsp.reference import Epilogue, random_inputs, reference_output
from embedcsp.targets.vta.config import MEM_INP, MEM_WGT
from embedcsp.targets.vta.encoding import FinishInsn, GemmInsn
from embedcsp.targets.vta.functional import run

ACC = load_accelerator()
VARIANT = load_accelerator("isa/vta_b2_i8_o32.toml")


def _numpy_gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


SHAPES = [(1, 1, 1), (17, 3, 33), (35, 700, 64), (20, 5, 40), (64, 1, 1216), (300, 1, 512),
          (16, 16, 16), (33, 47, 129)]


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gemm_verified_bit_exact(m, n, k):
    op = gemm(m, n, k)
    o = solve_and_verify(op, ACC, Options(), seed=11)
    v = o.verification
    assert v.ok and v.mismatches == 0 and v.checked == m * n
    program = o.compiled.program
    assert isinstance(program.insns[-1], FinishInsn)
    # Every GEMM micro-op the program issues is one the embedding needs (no waste beyond padding).
    issued = sum(i.iter_out * i.iter_in * (i.uop_end - i.uop_bgn) for i in program.insns
                 if isinstance(i, GemmInsn) and not i.reset)
    assert issued * 256 == o.compiled.embedding.padded_macs == v.counters.gemm_uops * 256


def test_output_read_back_through_the_bundle_layout(tmp_path):
    """Run the bundle's program and read C through layout.npz alone, against plain numpy."""
    op = gemm(35, 50, 70)
    o = solve_and_verify(op, ACC, Options(), seed=4)
    write_bundle(tmp_path, o.compiled, o.inputs, 4, o.verification, o.transforms)
    b = read_bundle(tmp_path)
    # Inputs can be recovered from dram.bin through T_dram/T_index.
    for t in op.inputs:
        values = b.dram[b.layout[f"{t.name}_dram"]].view(np.int8)
        np.testing.assert_array_equal(values, o.inputs[t.name].reshape(-1)[b.layout[f"{t.name}_index"]])
    final, _ = run(b.program, b.dram, b.config, ACC.pattern)
    got = final[b.layout["C_dram"]].view(np.int8)
    want = _numpy_gemm(o.inputs["A"], o.inputs["B"]).astype(np.int8)
    np.testing.assert_array_equal(got, want)
    assert run_bundle(b, seed=9).ok


@pytest.mark.parametrize("shift", [0, 7, 15])
def test_requant_epilogue(shift):
    op = gemm(40, 24, 300)
    o = solve_and_verify(op, ACC, Options(epilogue=Epilogue("requant", shift)), seed=shift)
    assert o.verification.ok
    counts = o.compiled.program.insn_counts()
    assert counts["alu"] == 3 * counts["store"]  # SHR, MIN, MAX per output tile
    # The reference the run was compared with is the plain-numpy requantisation.
    acc = _numpy_gemm(o.inputs["A"], o.inputs["B"])
    expected = np.clip(acc >> shift, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(reference_output(op, o.inputs, Epilogue("requant", shift, "floor")), expected)


@pytest.mark.parametrize("m,n,k", [(17, 3, 33), (35, 70, 64), (5, 9, 7), (64, 1, 100)])
def test_variant_config(m, n, k):
    """BATCH=2, BLOCK_IN=8, BLOCK_OUT=32 and smaller buffers: no code knows these numbers."""
    o = solve_and_verify(gemm(m, n, k), VARIANT, Options(), seed=2)
    assert o.verification.ok
    emb = o.compiled.embedding
    assert emb.group("row").lanes == 2 and emb.group("col").lanes == 32 and emb.group("red").lanes == 8
    cfg = VARIANT.config
    assert (cfg.depth(MEM_INP), cfg.depth(MEM_WGT)) == (512, 256)


def test_m35_puts_n_on_the_output_lanes():
    for n, k in ((700, 2048), (700, 2560), (1500, 2048), (1500, 2560)):
        emb = compile_operator(gemm(35, n, k), ACC).embedding
        assert emb.group("col").dims == ("n",)
        assert emb.efficiency >= 0.99  # the fixed strategy gets 35/48 = 0.729
        assert [lp.dim for lp in emb.loops_of("row")] == ["m"]


def test_matrix_vector_keeps_m_on_the_output_lanes():
    emb = compile_operator(gemm(3072, 1, 1024), ACC).embedding
    assert emb.group("col").dims == ("m",) and emb.efficiency == 1.0
    assert emb.bound["inp"] == "B"


@pytest.mark.parametrize("m,n,k", [(3, 5, 7), (17, 3, 33), (20, 20, 20)])
def test_scalar_dataflow_of_gemm_embeddings(m, n, k):
    for acc in (ACC, VARIANT):
        check_scalar(compile_operator(gemm(m, n, k), acc).embedding)


def test_random_inputs_are_reproducible_and_cover_int8():
    a = random_inputs(gemm(64, 64, 64), 3)
    b = random_inputs(gemm(64, 64, 64), 3)
    np.testing.assert_array_equal(a["A"], b["A"])
    assert a["A"].min() == -128 and a["A"].max() == 127
