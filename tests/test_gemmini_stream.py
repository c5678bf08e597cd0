"""Gemmini programs as streams: generated in chunks of plan steps, run by the model piece by
piece, costed chunk by chunk, with the same bytes, images, counters and cycles as the whole
program at once; the batched model's grouped path (sums per accumulator block) against the
per-command model, including OS chains cut between batches and sums split into segments."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from embedcsp.accelerator import load_accelerator
from embedcsp.operator import gemm
from embedcsp.pipeline import Options, compile_operator
from embedcsp.reference import Epilogue, random_inputs
from embedcsp.targets.gemmini import batch
from embedcsp.targets.gemmini.batch import run_entries, run_pieces
from embedcsp.targets.gemmini.codegen import (
    DRAM_BASE,
    KIND_OF_FUNCT,
    dram_image,
    generate,
    schedule,
)
from embedcsp.targets.gemmini.decode import decode_program, read_entries
from embedcsp.targets.gemmini.model import run
from embedcsp.targets.gemmini.plan import OS, WS, Plan, Tiling, axes
from embedcsp.targets.gemmini.timing import (
    StepCosts,
    board,
    command_costs,
    cost_program,
    simulate,
)

ROOT = Path(__file__).resolve().parent.parent
ISA16 = load_accelerator(ROOT / "isa" / "gemmini.toml")
ISA8 = load_accelerator(ROOT / "isa" / "gemmini_dim8.toml")
SAT, INT32 = Epilogue("saturate"), Epilogue("int32")


def _plan(shape, acc, tiling, out_bytes=1):
    c = compile_operator(gemm(*shape), acc, Options(time_limit=10))
    rows, cols, reds = axes(c.embedding)
    return c, Plan(c.embedding, acc.config, rows, cols, reds, tiling, out_bytes)


def _whole_costs(program, cfg):
    """Per-step costs from the whole program's arrays at once (the definition)."""
    w = program.arrays()
    n = len(program.stream.sizes)
    sums = np.zeros((4, n), np.int64)
    for row, (sel, cycles) in enumerate(command_costs(w.funct, w.rs1, w.rs2, cfg, program.dataflow)):
        np.add.at(sums[row], w.step[sel][w.step[sel] >= 0], cycles[w.step[sel] >= 0])
    np.add.at(sums[3], w.step[w.step >= 0], 1)
    sums[3, 0] += int((w.step < 0).sum())
    return StepCosts(*sums)


CASES = [
    ((70, 90, 100), ISA8, Tiling(2, 3, 4, "row", 2, WS)),
    ((70, 90, 100), ISA8, Tiling(4, 4, 3, "col", 1, OS, 3)),
    ((45, 37, 150), ISA16, Tiling(2, 2, 5, "col", 2, WS)),
    ((45, 37, 150), ISA16, Tiling(3, 1, 2, "row", 1, OS, 1)),
]


@pytest.mark.parametrize("shape,acc,tiling", CASES, ids=["ws8", "os8", "ws16", "os16"])
def test_chunks_are_the_program(shape, acc, tiling):
    """Any chunk size gives the same program.bin; chunks hold whole steps in order; the
    closed-form length and counts per kind are those of the commands; costs summed chunk by
    chunk equal the whole program's."""
    _, plan = _plan(shape, acc, tiling)
    program = generate(plan, SAT)
    whole = program.to_bytes()
    w = program.arrays()
    assert len(whole) == 24 * len(program) == 24 * len(w)
    for size in (1, 7, 300, 1 << 20):
        chunks = list(program.chunks(size))
        assert b"".join(ch.to_bytes() for ch in chunks) == whole
        assert [ch.start for ch in chunks] == list(np.cumsum([0] + [len(ch) for ch in chunks[:-1]]))
        for a, b in itertools.pairwise(chunks):
            assert a.step[-1] < b.step[0]  # no step is split between chunks
    per = np.bincount(w.funct.astype(np.int64), minlength=128)
    assert program.counts == {KIND_OF_FUNCT[f]: int(per[f]) for f in KIND_OF_FUNCT if per[f]}
    assert np.array_equal(np.bincount(w.step[w.step >= 0], minlength=plan.steps), program.stream.sizes)
    got = cost_program(program, plan, board("chipyard"))
    want = simulate(_whole_costs(program, acc.config), schedule(plan), acc.config, tiling.slots,
                    board("chipyard"))
    assert got == want


@pytest.mark.parametrize("shape,acc,tiling", CASES, ids=["ws8", "os8", "ws16", "os16"])
def test_pieces_run_like_the_whole_program(shape, acc, tiling, monkeypatch):
    """The model on program.bin read in pieces (and in small batches that cut OS chains)
    gives the per-command model's image and counters, and takes the grouped path."""
    c, plan = _plan(shape, acc, tiling)
    program = generate(plan, SAT)
    dram = dram_image(program, random_inputs(c.operator, 5))
    want = run(decode_program(program.to_bytes()), dram, DRAM_BASE, acc.config)
    grouped = []
    inner = batch._ex_grouped
    monkeypatch.setattr(batch, "_ex_grouped", lambda *a: grouped.append(r := inner(*a)) or r)
    for size, pairs in ((1 << 20, batch.PAIRS_PER_BATCH), (50, 5)):
        monkeypatch.setattr(batch, "PAIRS_PER_BATCH", pairs)
        pieces = (read_entries(ch.to_bytes(), ch.start) for ch in program.chunks(size))
        got = run_pieces(pieces, len(program), dram, DRAM_BASE, acc.config)
        assert np.array_equal(got[0], want[0]) and got[1].as_dict() == want[1].as_dict()
    assert any(g is not None and g is not False for g in grouped)


def test_long_sums_in_segments_and_partial_tiles(monkeypatch):
    """Reduction tiles longer than one exact float32 sum (138 chunks of 8 products > 1023) and
    partial edge chunks: the grouped path sums segments, still bit-exact (int32 read-out)."""
    c, plan = _plan((21, 19, 1100), ISA8, Tiling(3, 3, 138, "row", 1, WS), 4)
    program = generate(plan, INT32)
    dram = dram_image(program, random_inputs(c.operator, 9))
    raw = program.to_bytes()
    want = run(decode_program(raw), dram, DRAM_BASE, ISA8.config)
    seen = []
    inner = batch._ex_grouped
    monkeypatch.setattr(batch, "_ex_grouped", lambda *a: seen.append(r := inner(*a)) or r)
    got = run_entries(read_entries(raw), dram, DRAM_BASE, ISA8.config)
    assert np.array_equal(got[0], want[0]) and got[1].as_dict() == want[1].as_dict()
    assert any(isinstance(s, np.ndarray) for s in seen)


def test_extreme_values_stay_exact():
    """All inputs -128: every product is 2^14, the largest magnitude; sums of 1100 of them
    (over 2^24) come out exact as int32."""
    c, plan = _plan((9, 17, 1100), ISA8, Tiling(2, 3, 138, "col", 1, WS), 4)
    program = generate(plan, INT32)
    inputs = {k: np.full_like(v, -128) for k, v in random_inputs(c.operator, 0).items()}
    dram = dram_image(program, inputs)
    final, _ = run_entries(read_entries(program.to_bytes()), dram, DRAM_BASE, ISA8.config)
    want, _ = run(decode_program(program.to_bytes()), dram, DRAM_BASE, ISA8.config)
    assert np.array_equal(final, want)
    region = program.regions["c"]
    out = final[region.offset:region.offset + region.size].view("<i4")
    assert (out == 1100 * 16384).all()


def test_modelled_cycles_are_the_built_programs():
    """The family's modelled cycles of an embedding (no element maps built) are the cycles of
    the program `build` returns for it, as the cycle model costs that program."""
    from embedcsp.targets.gemmini import FAMILY

    for acc, shape in ((ISA16, (45, 37, 150)), (ISA8, (70, 90, 100))):
        c = compile_operator(gemm(*shape), acc, Options(time_limit=10))
        assert FAMILY.modelled_cycles(c.embedding, c.options) == c.plan.estimated_cycles
        assert FAMILY.cost(c).cycles == c.plan.estimated_cycles
        assert set(c.program.element_maps) == {"a", "b", "c"}
