"""Tile programs: record encodings, the functional model against numpy computed here, its refusals,
and the cycle model against costs worked out by hand (docs/tile.md sections 4-8).

Programs are built by hand in this file: a small tiler (`tiled`) that covers an
operator with instruction instances, plus literal instruction lists. Every
expected value is computed with numpy matrix products in int64 or Python
integers, never through the pattern's einsum.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedcsp.errors import ProgramError
from embedcsp.targets.tile.config import load_tile, tile_accelerator
from embedcsp.targets.tile.model import decode_program, run, run_program
from embedcsp.targets.tile.program import (
    Compute,
    Load,
    Store,
    add_waits,
    describe_insn,
    encode,
    encode_program,
)
from embedcsp.targets.tile.timing import DMA_RUN, ISSUE, cost, roofline, simulate

ISA = Path(__file__).resolve().parents[1] / "isa"
MMA = load_tile(ISA / "tile_mma_16x8x16.toml").config
NPU = load_tile(ISA / "tile_8x8x32.toml").config
MATVEC = load_tile(ISA / "tile_matvec.toml").config
DOT = load_tile(ISA / "tile_dot4.toml").config
GROUPED = load_tile(ISA / "tile_grouped.toml").config


# ---------------------------------------------------------------- a tiler for the tests

_TERM = re.compile(r"(\w+)\[([\w,]*)\]")


def terms(statement: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(n, tuple(d for d in dims.split(",") if d)) for n, dims in _TERM.findall(statement)]


def tiled(cfg, statement, extents, bind, dim_of, epilogue="int32", nbuf=2, seed=0):
    """Cover the operator `statement` (output first) with instructions of `cfg`.

    bind: pattern operand -> operator tensor; dim_of: pattern dim -> operator dim. Operator
    dims no pattern dim maps to are loops, one index per instance. Tensors are row-major in
    DRAM one after the other. Returns (program, dram, inputs by name, output name, where).
    """
    rng = np.random.default_rng(seed)
    (out_t, out_dims), *in_terms = terms(statement)
    tensors = {n: d for n, d in [(out_t, out_dims), *in_terms]}
    pattern_of = {v: k for k, v in bind.items()}
    dtypes = {t: cfg.dtype(pattern_of[t]) for t in tensors if t != out_t}
    out_bytes = 4 if epilogue == "int32" else 1
    esz = {**{t: dt.bytes for t, dt in dtypes.items()}, out_t: out_bytes}
    base, inputs, dram = {}, {}, bytearray()
    for t, dims in tensors.items():
        shape = tuple(extents[d] for d in dims)
        base[t] = len(dram)
        if t == out_t:
            dram += bytes(math.prod(shape) * out_bytes)
        else:
            dt = dtypes[t]
            inputs[t] = rng.integers(dt.lo, dt.hi + 1, size=shape).astype(dt.numpy)
            dram += inputs[t].tobytes()
    dram += bytes(64)  # a margin past the last tensor
    strides = {}
    for t, dims in tensors.items():
        step = esz[t]
        for d in reversed(dims):
            strides[(t, d)] = step
            step *= extents[d]
    lane = {dim_of[p]: e for p, e in cfg.pattern.lanes}
    starts = {d: range(0, extents[d], lane.get(d, 1)) for d in extents}
    out_loop = [d for d in extents if d in out_dims]
    red_loop = [d for d in extents if d not in out_dims]

    def transfer(operand, tensor, at):
        dims = cfg.dims_of(operand)
        off = base[tensor] + sum(at[d] * strides[(tensor, d)] for d in tensors[tensor])
        st = tuple(strides[(tensor, dim_of[p])] for p in dims)
        valid = tuple(min(lane[dim_of[p]], extents[dim_of[p]] - at[dim_of[p]]) for p in dims)
        return off, st, valid

    a_name, b_name, o_name = cfg.operand_names
    insns, n = [], 0
    for out_at in itertools.product(*(starts[d] for d in out_loop)):
        o_slot = n % nbuf
        for i, red_at in enumerate(itertools.product(*(starts[d] for d in red_loop))):
            at = dict(zip(out_loop, out_at)) | dict(zip(red_loop, red_at))
            slot = n % nbuf
            for operand in (a_name, b_name):
                off, st, valid = transfer(operand, bind[operand], at)
                insns.append(Load(operand, slot, off, st, valid))
            insns.append(Compute(slot, slot, o_slot, accumulate=i > 0))
            n += 1
        off, st, valid = transfer(o_name, out_t, at)
        insns.append(Store(o_slot, off, st, valid, epilogue))
    where = (base[out_t], tuple(extents[d] for d in out_dims), out_bytes)
    return add_waits(insns, cfg), np.frombuffer(bytes(dram), np.uint8), inputs, where


def output(dram, where):
    at, shape, esz = where
    raw = dram[at:at + math.prod(shape) * esz]
    return raw.view("<i4" if esz == 4 else np.int8).reshape(shape).astype(np.int64)


def expect(sums: np.ndarray, epilogue: str) -> np.ndarray:
    """Epilogues of docs/tile.md section 6, by integer arithmetic (no wrap helper of the model)."""
    sums = np.asarray(sums, np.int64)
    if epilogue == "wrap":
        return (sums + 128) % 256 - 128
    if epilogue == "saturate":
        return np.clip(sums, -128, 127)
    return (sums + 2**31) % 2**32 - 2**31


def i64(x):
    return np.asarray(x, np.int64)


# ---------------------------------------------------------------- each shipped instruction

@pytest.mark.parametrize("epilogue", ["int32", "wrap", "saturate"])
def test_mma_computes_a_padded_gemm_exactly(epilogue):
    prog, dram, x, where = tiled(MMA, "C[m,n] += A[m,k] * B[k,n]", {"m": 20, "n": 13, "k": 37},
                                 {"a": "A", "b": "B", "c": "C"}, {"m": "m", "n": "n", "k": "k"},
                                 epilogue=epilogue)
    final, counters = run(prog, dram, MMA)
    assert np.array_equal(output(final, where), expect(i64(x["A"]) @ i64(x["B"]), epilogue))
    # 2 x 2 output tiles, 3 reduction steps each: 12 computes of 2048 MACs.
    assert counters.insns == {"load": 24, "compute": 12, "store": 4}
    assert counters.macs == 12 * 2048
    assert counters.load_bytes == 2 * 20 * 37 + 2 * 37 * 13  # A read per n tile, B per m tile
    assert counters.store_bytes == 20 * 13 * (4 if epilogue == "int32" else 1)


def test_the_8x8x32_npu_computes_unsigned_times_signed_against_a_transposed_weight():
    prog, dram, x, where = tiled(NPU, "C[m,n] += A[m,k] * W[n,k]", {"m": 9, "n": 16, "k": 70},
                                 {"a": "A", "w": "W", "c": "C"}, {"m": "m", "n": "n", "k": "k"})
    assert x["A"].dtype == np.uint8 and x["A"].max() > 127
    final, _ = run(prog, dram, NPU)
    assert np.array_equal(output(final, where), expect(i64(x["A"]) @ i64(x["W"]).T, "int32"))


def test_matvec_computes_a_gemm_column_by_column_with_strided_vectors():
    # y[m] += A[m,k] * x[k] on C = A @ B: n is a loop, x gathers a column of B (stride N).
    prog, dram, x, where = tiled(MATVEC, "C[m,n] += A[m,k] * B[k,n]", {"m": 18, "n": 5, "k": 20},
                                 {"A": "A", "x": "B", "y": "C"}, {"m": "m", "k": "k"})
    assert x["B"].dtype == np.int16
    assert any(isinstance(i, Load) and i.operand == "x" and i.strides == (5 * 2,) for i in prog)
    final, counters = run(prog, dram, MATVEC)
    assert np.array_equal(output(final, where), expect(i64(x["A"]) @ i64(x["B"]), "int32"))
    assert counters.insns["compute"] == 2 * 5 * 2


def test_dot4_computes_a_gemm_one_scalar_output_at_a_time():
    prog, dram, x, where = tiled(DOT, "C[m,n] += A[m,k] * B[k,n]", {"m": 3, "n": 2, "k": 10},
                                 {"x": "A", "y": "B", "z": "C"}, {"k": "k"}, epilogue="saturate")
    assert all(i.strides == () for i in prog if isinstance(i, Store))
    final, counters = run(prog, dram, DOT)
    assert np.array_equal(output(final, where), expect(i64(x["A"]) @ i64(x["B"]), "saturate"))
    assert counters.insns["compute"] == 3 * 2 * 3 and counters.macs == 18 * 4


def test_grouped_computes_a_grouped_product():
    # Y[b,g,o] += X[b,g,i] * W[g,o,i]: b is a loop, g a batched lane.
    prog, dram, x, where = tiled(GROUPED, "Y[b,g,o] += X[b,g,i] * W[g,o,i]",
                                 {"b": 3, "g": 6, "o": 7, "i": 9},
                                 {"inp": "X", "wgt": "W", "acc": "Y"}, {"g": "g", "o": "o", "i": "i"})
    final, _ = run(prog, dram, GROUPED)
    want = np.stack([i64(x["X"])[:, g, :] @ i64(x["W"])[g].T for g in range(6)], axis=1)
    assert np.array_equal(output(final, where), expect(want, "int32"))


def test_program_bin_runs_like_the_records():
    prog, dram, _x, _where = tiled(MMA, "C[m,n] += A[m,k] * B[k,n]", {"m": 16, "n": 8, "k": 32},
                                 {"a": "A", "b": "B", "c": "C"}, {"m": "m", "n": "n", "k": "k"})
    raw = encode_program(prog, MMA)
    assert len(raw) == 64 * len(prog) and decode_program(raw, MMA) == prog
    final, _ = run_program(raw, dram, MMA)
    assert np.array_equal(final, run(prog, dram, MMA)[0])


# ---------------------------------------------------------------- padding and epilogues

def test_a_load_pads_with_zeros_and_a_store_writes_only_its_valid_part():
    cfg = tile_accelerator("c[m,n] += a[m,k] * b[k,n]", {"m": 2, "n": 3, "k": 2},
                           memory={"a": 4, "b": 6, "c": 24}, bytes_per_cycle=4, name="t")
    dram = np.full(64, 0x55, np.uint8)
    dram[0:4] = [1, 2, 3, 4]         # a = [[1, 2], [3, 4]], only [[1], [3]] loaded
    dram[8:14] = [5, 6, 7, 8, 9, 10]  # b = [[5, 6, 7], [8, 9, 10]]
    prog = [Load("a", 0, 0, (2, 1), (2, 1)), Load("b", 0, 8, (3, 1), (2, 3)),
            Compute(0, 0, 0, False, after_load=2),
            Store(0, 32, (3, 1), (1, 2), "wrap", after_compute=1)]
    final, counters = run(prog, dram, cfg.config)
    # c = [[1*5, 1*6, 1*7], [3*5, 3*6, 3*7]]; the store writes row 0, columns 0-1.
    assert list(final[32:36]) == [5, 6, 0x55, 0x55]
    assert list(final[35:38]) == [0x55, 0x55, 0x55]
    assert counters.load_bytes == 2 + 6 and counters.store_bytes == 2


def test_epilogues_wrap_saturate_and_keep_int32_little_endian():
    cfg = tile_accelerator("z[u] += x[u,k] * y[k]", {"u": 3, "k": 1}, memory={"x": 3, "y": 1, "z": 12},
                           bytes_per_cycle=4, name="t").config
    dram = np.zeros(64, np.uint8)
    dram[0:3] = np.array([100, -100, 3], np.int8).view(np.uint8)
    dram[3] = 7  # 700, -700, 21
    prog = [Load("x", 0, 0, (1, 1), (3, 1)), Load("y", 0, 3, (1,), (1,)),
            Compute(0, 0, 0, False, after_load=2),
            Store(0, 16, (1,), (3,), "wrap", after_compute=1),
            Store(0, 20, (1,), (3,), "saturate", after_compute=1),
            Store(0, 24, (4,), (3,), "int32", after_compute=1)]
    final, _ = run(prog, dram, cfg)
    assert list(final[16:19].view(np.int8)) == [700 % 256 - 256, -700 % 256, 21]  # -68, 68, 21
    assert list(final[20:23].view(np.int8)) == [127, -128, 21]
    assert list(final[24:36].view("<i4")) == [700, -700, 21]


def test_an_accumulator_narrower_than_the_sums_wraps_and_a_uint8_input_is_unsigned():
    cfg = tile_accelerator("z[u] += x[u,k] * y[k]", {"u": 1, "k": 2}, memory={"x": 2, "y": 2, "z": 2},
                           bytes_per_cycle=4, dtypes={"x": "uint8", "z": "int16"}, name="t").config
    dram = np.zeros(32, np.uint8)
    dram[0:2] = [255, 200]
    dram[2:4] = np.array([127, 127], np.int8).view(np.uint8)
    prog = [Load("x", 0, 0, (2, 1), (1, 2)), Load("y", 0, 2, (1,), (2,)),
            Compute(0, 0, 0, False, after_load=2), Compute(0, 0, 0, True),
            Store(0, 8, (4,), (1,), "int32", after_compute=2)]
    final, _ = run(prog, dram, cfg)
    total = 2 * (255 * 127 + 200 * 127)  # 115570, wrapped to int16
    assert int(final[8:12].view("<i4")[0]) == (total + 2**15) % 2**16 - 2**15


def test_an_output_tile_can_be_loaded_as_a_bias():
    cfg = DOT
    dram = np.zeros(32, np.uint8)
    dram[0:4] = [1, 2, 3, 4]
    dram[4:8] = [1, 1, 1, 1]
    dram[8:12] = np.array([1000], "<i4").view(np.uint8)
    prog = add_waits([Load("z", 0, 8, (), ()), Load("x", 0, 0, (1,), (4,)), Load("y", 0, 4, (1,), (4,)),
                      Compute(0, 0, 0, True), Store(0, 16, (), (), "int32")], cfg)
    final, _ = run(prog, dram, cfg)
    assert int(final[16:20].view("<i4")[0]) == 1010


# ---------------------------------------------------------------- program.bin

def test_hand_worked_record_encodings():
    load = Load("a", slot=1, dram_offset=0x100, strides=(16, 1), valid=(16, 12), after_compute=2)
    assert encode(load, MMA) == bytes.fromhex(
        "01000002" "00000000" "02000000" "00000000"   # load, a, no flags, rank 2; waits l/c/s
        "01000000" "00000000" "0001000000000000"       # slot 1, reserved, offset 0x100
        "10000000" "01000000" "00000000" "00000000"   # strides 16, 1
        "10000000" "0c000000" "00000000" "00000000")  # valid 16, 12
    comp = Compute(a_slot=3, b_slot=4, out_slot=5, accumulate=True, after_load=7, after_store=1)
    assert encode(comp, MMA) == bytes.fromhex(
        "02000100" "07000000" "00000000" "01000000" "03000000" "04000000" "05000000") + bytes(36)
    store = Store(slot=2, dram_offset=0x1000, strides=(32, 4), valid=(16, 8), epilogue="saturate",
                  after_compute=9)
    assert encode(store, MMA) == bytes.fromhex(
        "03020102" "00000000" "09000000" "00000000" "02000000" "00000000" "0010000000000000"
        "20000000" "04000000" "00000000" "00000000" "10000000" "08000000" "00000000" "00000000")
    back = Load("b", 0, 64, (-8, 1), (16, 8), after_store=3)
    assert encode(back, MMA)[:16] == bytes.fromhex("01010002" "00000000" "00000000" "03000000")
    assert encode(back, MMA)[32:40] == bytes.fromhex("f8ffffff" "01000000")
    scalar = Store(slot=0, dram_offset=5, strides=(), valid=(), epilogue="wrap")
    assert encode(scalar, DOT) == bytes.fromhex("03020000") + bytes(12) + bytes(8) + bytes.fromhex(
        "0500000000000000") + bytes(32)
    for insn in (load, comp, store, back):
        assert decode_program(encode(insn, MMA), MMA) == [insn]
    assert decode_program(encode(scalar, DOT), DOT) == [scalar]


@pytest.mark.parametrize("cfg", [MMA, NPU, MATVEC, DOT, GROUPED], ids=lambda c: c.tag())
def test_random_records_survive_a_round_trip(cfg):
    rng = np.random.default_rng(len(cfg.tag()))
    insns = []
    for _ in range(200):
        kind = rng.integers(3)
        w = [int(v) for v in rng.integers(0, 2**32, 2)]
        if kind == 0:
            name = cfg.operand_names[rng.integers(3)]
            rank = len(cfg.dims_of(name))
            insns.append(Load(name, int(rng.integers(2**32)), int(rng.integers(2**63)),
                              tuple(int(s) for s in rng.integers(-2**31, 2**31, rank)),
                              tuple(int(v) for v in rng.integers(0, 2**32, rank)), *w))
        elif kind == 1:
            insns.append(Compute(*(int(s) for s in rng.integers(0, 2**32, 3)), bool(rng.integers(2)), *w))
        else:
            rank = len(cfg.pattern.output.dims)
            insns.append(Store(int(rng.integers(2**32)), int(rng.integers(2**63)),
                               tuple(int(s) for s in rng.integers(-2**31, 2**31, rank)),
                               tuple(int(v) for v in rng.integers(0, 2**32, rank)),
                               ("wrap", "saturate", "int32")[rng.integers(3)], *w))
    assert decode_program(encode_program(insns, cfg), cfg) == insns


@pytest.mark.parametrize(("insn", "message"), [
    (Load("q", 0, 0, (1, 1), (1, 1)), r"Load.operand='q': the operands are a, b, c"),
    (Load("a", 0, 0, (1,), (1,)), r"Load.strides=\(1,\): operand a has 2 dim\(s\)"),
    (Load("a", 0, 0, (1, 2**31), (1, 1)), r"Load.strides=.*: 2147483648 does not fit i32"),
    (Load("a", -1, 0, (1, 1), (1, 1)), r"Load.slot=-1 does not fit u32"),
    (Store(0, 0, (1, 1), (1, 1), "relu"), r"Store.epilogue='relu': expected one of wrap, saturate, int32"),
    (Compute(0, 0, 0, 1), r"Compute.accumulate=1 is not True/False"),
    (Compute(0, 0, 0, False, after_load=2**32), r"Compute.after_load=4294967296 does not fit u32"),
])
def test_the_encoder_refuses_fields_that_do_not_fit(insn, message):
    with pytest.raises(ValueError, match=message):
        encode(insn, MMA)


def _record(head: str, rest: bytes = b"") -> bytes:
    """A 64-byte record: `head` in hex from byte 0, then `rest`, then zeros."""
    raw = bytes.fromhex(head) + rest
    return raw + bytes(64 - len(raw))


@pytest.mark.parametrize(("raw", "message"), [
    (bytes(65), r"program is 65 bytes, not a whole number of 64-byte records"),
    (_record("09000000"), r"record 0: opcode 9 is none of 1 \(load\), 2 \(compute\), 3 \(store\)"),
    (_record("02000000" "00000000" "01000000"), r"record 0: a compute instruction waits on its own queue"),
    (_record("01000002" "01000000"), r"record 0: a load instruction waits on its own queue"),
    (_record("02000200"), r"record 0: compute flags 0x02: only bit 0 \(accumulate\) exists"),
    (_record("02010000"), r"record 0: compute has operand byte 1 and rank byte 0; both must be 0"),
    (_record("02000000", bytes(24) + b"\x01"), r"record 0: bytes 28..63 \(unused by compute\) must be zero"),
    (_record("01030002"), r"record 0: load operand byte 3: 0, 1 \(the inputs\) or 2 \(the output\)"),
    (_record("03000002"), r"record 0: store operand byte 0: a store reads the output \(2\)"),
    (_record("03020302"), r"record 0: store epilogue code 3: 0 wrap, 1 saturate, 2 int32"),
    (_record("01000102"), r"record 0: load flags 0x01 must be 0"),
    (_record("01000003"), r"record 0: rank byte 3, but operand a has 2 dim\(s\)"),
    (_record("01000002", bytes(16) + b"\x01"), r"record 0: bytes 20..23 \(reserved\) must be zero"),
    (_record("01000002", bytes(28) + bytes(8) + b"\x01"),
     r"record 0: stride or valid fields beyond the operand's 2 dim\(s\) are not zero"),
], ids=lambda v: v[:8].hex() if isinstance(v, bytes) else "")
def test_the_decoder_refuses_what_the_layout_does_not_allow(raw, message):
    with pytest.raises(ValueError, match=message):
        decode_program(raw, MMA)
    with pytest.raises(ProgramError, match="^program.bin: " + message):
        run_program(raw, np.zeros(8, np.uint8), MMA)


def test_a_listing_line_per_instruction():
    assert describe_insn(Load("a", 1, 256, (16, 1), (16, 12), after_compute=2)) == (
        "load a[1] <- @256 strides [16, 1] valid [16, 12] (after compute 2)")
    assert describe_insn(Compute(0, 1, 2, True, after_load=4)) == (
        "compute out[2] += a[0] * b[1] (after load 4)")
    assert describe_insn(Store(2, 0, (32, 4), (16, 8), "wrap")) == (
        "store out[2] -> @0 strides [32, 4] valid [16, 8] wrap")


# ---------------------------------------------------------------- refusals

def _pair():
    """Load a and b into slot 0, then one compute into out slot 0, correctly ordered."""
    return [Load("a", 0, 0, (16, 1), (16, 16)), Load("b", 0, 256, (8, 1), (16, 8)),
            Compute(0, 0, 0, False, after_load=2)]


DRAM = np.zeros(4096, np.uint8)


def refused(prog, message, cfg=MMA, dram=DRAM):
    with pytest.raises(ProgramError, match=message):
        run(prog, dram, cfg)


def test_a_compute_that_does_not_wait_for_its_loads_races():
    prog = _pair()
    prog[2] = replace(prog[2], after_load=0)
    refused(prog, r"^race on slot 0 of a: instruction 2 \(compute\) reads what instruction 0 \(load\) "
                  r"writes, and no wait orders the two$")


def test_a_store_that_does_not_wait_for_its_compute_races():
    refused(_pair() + [Store(0, 1024, (32, 4), (16, 8))],
            r"^race on slot 0 of c: instruction 3 \(store\) reads what instruction 2 \(compute\) writes")


def test_a_load_that_overwrites_a_slot_a_store_still_reads_races():
    c_tile = Load("c", 0, 1024, (32, 4), (16, 8))
    prog = [c_tile, Load("a", 0, 0, (16, 1), (16, 16)), Load("b", 0, 256, (8, 1), (16, 8)),
            replace(c_tile, after_compute=1),               # overwrites c slot 0 again
            Compute(0, 0, 1, False, after_load=3),          # into slot 1: unrelated to the store
            Store(0, 2048, (32, 4), (16, 8), after_load=1)]  # reads c slot 0, not ordered before pc 3
    refused(prog, r"^race on slot 0 of c: instruction 3 \(load\) overwrites what instruction 5 "
                  r"\(store\) reads, and no wait orders the two$")


def test_a_compute_that_overwrites_an_output_before_its_store_races():
    prog = _pair() + [Store(0, 1024, (32, 4), (16, 8), after_compute=1),
                      Compute(0, 0, 0, False)]  # no after_store: may run before the store
    refused(prog, r"^race on slot 0 of c: instruction 3 \(store\) reads what instruction 4 \(compute\) "
                  r"writes")


def test_a_load_of_bytes_a_store_writes_races_in_dram():
    prog = _pair() + [Store(0, 0, (32, 4), (16, 8), after_compute=1),
                      Load("a", 1, 0, (16, 1), (16, 16), after_compute=1)]  # not after the store
    refused(prog, r"^race on DRAM byte 0: instruction 4 \(load\) reads what instruction 3 \(store\) writes")


def test_a_store_over_bytes_a_later_load_reads_races_in_dram():
    prog = _pair() + [Load("a", 1, 1024, (16, 1), (16, 16)),
                      Store(0, 1024, (32, 4), (16, 8), after_compute=1)]
    refused(prog, r"^race on DRAM byte 1024: instruction 4 \(store\) overwrites what instruction 3 "
                  r"\(load\) reads")


def test_ordered_dram_reuse_is_accepted():
    prog = _pair() + [Store(0, 0, (32, 4), (16, 8), after_compute=1),
                      Load("a", 1, 0, (16, 1), (16, 16), after_store=1)]
    assert run(prog, DRAM, MMA)[1].insns["load"] == 3


def test_reading_a_slot_nothing_wrote_is_refused():
    refused([Load("a", 0, 0, (16, 1), (16, 16)), Compute(0, 0, 0, False, after_load=1)],
            r"^instruction 1 \(compute\): reads slot 0 of b, which nothing wrote before it$")
    refused(_pair()[:2] + [Compute(0, 0, 3, True, after_load=2)],
            r"^instruction 2 \(compute\): reads slot 3 of c, which nothing wrote before it$")
    refused([Store(0, 0, (32, 4), (16, 8))], r"reads slot 0 of c, which nothing wrote before it")


def test_a_slot_beyond_the_memory_is_refused():
    refused([Load("b", 512, 0, (8, 1), (16, 8))],
            r"^instruction 0 \(load\): slot = 512 is beyond the memory of b: 65536 B hold 512 tile\(s\) "
            r"of 128 B \(slots 0..511\)$")
    refused([Compute(0, 0, 128, False)], r"out_slot = 128 is beyond the memory of c")


def test_dram_outside_the_image_is_refused():
    refused([Load("a", 0, 4096 - 255, (16, 1), (16, 16))],
            r"^instruction 0 \(load\): touches DRAM bytes \[3841, 4097\), outside the 4096-byte image$")
    refused([Load("a", 0, 16, (-32, 1), (2, 16))], r"touches DRAM bytes \[-16, 32\)")
    refused(_pair() + [Store(0, 4000, (32, 4), (16, 8), after_compute=1)],
            r"instruction 3 \(store\): touches DRAM bytes \[4000, 4512\)")


def test_a_store_whose_elements_overlap_is_refused():
    refused(_pair() + [Store(0, 0, (32, 2), (16, 8), after_compute=1)],
            r"^instruction 3 \(store\): its elements overlap in DRAM \(strides \[32, 2\] with 4-byte "
            r"elements\)")


def test_records_that_do_not_fit_the_description_are_refused():
    refused([Load("a", 0, 0, (16, 1), (17, 16))],
            r"^instruction 0 \(load\): valid extent 17 of dim m is outside 0..16 \(the lane extent\)$")
    refused([Load("a", 0, 0, (16,), (16,))], r"strides = \(16,\); operand a needs one whole number per dim")
    refused([Load("z", 0, 0, (16, 1), (16, 16))], r"operand 'z' is none of a, b, c")
    refused([Store(0, 0, (32, 4), (16, 8), "relu")], r"epilogue 'relu' is none of wrap, saturate, int32")
    refused([Compute(0, 0, 0, False, after_load=-1)], r"after_load = -1 is not a count >= 0")
    refused([Load("a", 0, -1, (16, 1), (16, 16))], r"dram_offset = -1 is not a byte address")
    refused(["nop"], r"^instruction 0: str is not a tile instruction$")
    with pytest.raises(ProgramError, match="flat uint8 array"):
        run([], np.zeros(4, np.int8), MMA)


def test_waits_that_can_never_be_met_deadlock():
    refused(_pair()[:2] + [Compute(0, 0, 0, False, after_load=3)],
            r"^deadlock: instruction 2 \(compute\) waits for 3 load instruction\(s\), but the program has 2$")
    prog = _pair()
    prog[2] = replace(prog[2], after_store=1)
    prog.append(Store(0, 1024, (32, 4), (16, 8), after_compute=1))
    refused(prog, r"^deadlock: instruction 2 \(compute\) waits for 1 store \(done 0\); "
                  r"instruction 3 \(store\) waits for 1 compute \(done 0\)$")
    with pytest.raises(ProgramError, match="deadlocked"):
        simulate(prog, MMA)


def test_a_program_without_its_waits_is_refused_and_add_waits_restores_them():
    prog, dram, _x, _where = tiled(MMA, "C[m,n] += A[m,k] * B[k,n]", {"m": 16, "n": 16, "k": 32},
                                 {"a": "A", "b": "B", "c": "C"}, {"m": "m", "n": "n", "k": "k"})
    bare = [replace(i, **{f: 0 for f in ("after_load", "after_compute", "after_store")
                          if hasattr(i, f)}) for i in prog]
    with pytest.raises(ProgramError, match="race"):
        run(bare, dram, MMA)
    assert add_waits(bare, MMA) == prog
    # Single buffering needs more waits (each load waits for the compute reading its slot).
    single, *_ = tiled(MMA, "C[m,n] += A[m,k] * B[k,n]", {"m": 16, "n": 16, "k": 32},
                       {"a": "A", "b": "B", "c": "C"}, {"m": "m", "n": "n", "k": "k"}, nbuf=1)
    assert sum(i.after_compute for i in single if isinstance(i, Load)) > 0
    assert np.array_equal(run(single, dram, MMA)[0], run(prog, dram, MMA)[0])


# ---------------------------------------------------------------- the cycle model

def test_transfer_costs_worked_by_hand():
    assert (ISSUE, DMA_RUN) == (1, 2)
    # 16 rows of 16 contiguous bytes, rows back to back: one run, 256 B at 16 B/cycle.
    assert cost(Load("a", 0, 0, (16, 1), (16, 16)), MMA) == 1 + 2 * 1 + 16
    # The same rows out of a 32-byte-wide matrix: 16 runs.
    assert cost(Load("a", 0, 0, (32, 1), (16, 16)), MMA) == 1 + 2 * 16 + 16
    # A transposed gather (n innermost in the tile, 16 bytes apart): one run per element.
    assert cost(Load("b", 0, 0, (1, 16), (16, 8)), MMA) == 1 + 2 * 128 + 8
    # A padded tile moves only its valid bytes: 10 x 12 of 16 x 16.
    assert cost(Load("a", 0, 0, (12, 1), (10, 12)), MMA) == 1 + 2 * 1 + 8  # 120 B -> 8 cycles
    # int32 stores: 16 x 8 x 4 = 512 B contiguous; the 'wrap' epilogue writes 128 B.
    assert cost(Store(0, 0, (32, 4), (16, 8)), MMA) == 1 + 2 + 32
    assert cost(Store(0, 0, (8, 1), (16, 8), "wrap"), MMA) == 1 + 2 + 8
    assert cost(Load("a", 0, 0, (16, 1), (0, 16)), MMA) == 1  # moves nothing
    assert cost(Compute(0, 0, 0, False), NPU) == 2  # ii


def test_a_serial_program_costs_the_sum_of_its_steps():
    prog = _pair() + [Store(0, 1024, (32, 4), (16, 8), after_compute=1)]
    t = simulate(prog, MMA)
    # load a [0, 19), load b [19, 30), compute [30, 31), store [31, 66)
    assert (t.cycles, t.busy, t.compute_cycles) == (66, (30, 1, 35), 1)
    assert t.as_dict()["busy"] == {"load": 30, "compute": 1, "store": 35}


def test_queues_overlap_as_far_as_the_waits_and_the_one_dma_engine_allow():
    # ii = 10 so computes can hide transfers; every transfer is tiny.
    cfg = tile_accelerator("c[m] += a[m,k] * b[k]", {"m": 2, "k": 2}, memory={"a": 8, "b": 4, "c": 16},
                           bytes_per_cycle=4, ii=10, name="t").config
    la = [Load("a", s, 4 * s, (2, 1), (2, 2)) for s in (0, 1)]      # 4 B: 1 + 2 + 1 = 4 cycles
    lb = [Load("b", s, 8 + 2 * s, (1,), (2,)) for s in (0, 1)]      # 2 B: 1 + 2 + 1 = 4 cycles
    st = [Store(s, 16 + 8 * s, (4,), (2,), after_compute=s + 1) for s in (0, 1)]  # 8 B: 5 cycles
    prog = [la[0], lb[0], la[1], lb[1], Compute(0, 0, 0, False, after_load=2),
            Compute(1, 1, 1, False, after_load=4), *st]
    # loads [0,4) [4,8) [8,12) [12,16); compute 0 [8,18) beside the third load (computes do
    # not use the DMA engine); compute 1 [18,28); store 0 [18,23); store 1 [28,33).
    t = simulate(prog, cfg)
    assert (t.cycles, t.busy) == (33, (16, 20, 10))
    serial = add_waits(prog, cfg)  # same program, already ordered enough: the same schedule
    assert simulate(serial, cfg).cycles == 33
    fully_serial = []
    for i, insn in enumerate(prog):  # every instruction after every earlier one
        counts = [sum(isinstance(p, k) for p in prog[:i]) for k in (Load, Compute, Store)]
        for q, field in enumerate(("after_load", "after_compute", "after_store")):
            if hasattr(insn, field):
                insn = replace(insn, **{field: counts[q]})
        fully_serial.append(insn)
    assert simulate(fully_serial, cfg).cycles == 4 + 4 + 4 + 4 + 10 + 10 + 5 + 5
    _final, counters = run(prog, np.zeros(64, np.uint8), cfg)
    rl = roofline(counters.macs, 8 + 4 + 16, cfg)
    assert (rl.compute_cycles, rl.memory_cycles, rl.cycles) == (20, 7, 20)
    assert t.cycles >= rl.cycles and rl.efficiency(t.cycles) == 20 / 33


def test_loads_and_stores_share_the_dma_engine():
    prog = _pair() + [Store(0, 1024, (32, 4), (16, 8), after_compute=1),
                      Load("a", 1, 0, (16, 1), (16, 16))]  # independent of the store
    # store ready at 31 but the second load holds the engine [30, 49): store [49, 84).
    t = simulate(prog, MMA)
    assert t.cycles == 84 and t.busy == (49, 1, 35)


@pytest.mark.parametrize(("cfg", "statement", "extents", "bind", "dim_of"), [
    (MMA, "C[m,n] += A[m,k] * B[k,n]", {"m": 40, "n": 24, "k": 64}, {"a": "A", "b": "B", "c": "C"},
     {"m": "m", "n": "n", "k": "k"}),
    (NPU, "C[m,n] += A[m,k] * W[n,k]", {"m": 16, "n": 16, "k": 96}, {"a": "A", "w": "W", "c": "C"},
     {"m": "m", "n": "n", "k": "k"}),
    (MATVEC, "C[m,n] += A[m,k] * B[k,n]", {"m": 32, "n": 3, "k": 48}, {"A": "A", "x": "B", "y": "C"},
     {"m": "m", "k": "k"}),
    (DOT, "C[m,n] += A[m,k] * B[k,n]", {"m": 2, "n": 3, "k": 16}, {"x": "A", "y": "B", "z": "C"},
     {"k": "k"}),
    (GROUPED, "Y[b,g,o] += X[b,g,i] * W[g,o,i]", {"b": 2, "g": 8, "o": 4, "i": 8},
     {"inp": "X", "wgt": "W", "acc": "Y"}, {"g": "g", "o": "o", "i": "i"}),
], ids=lambda v: v.tag() if hasattr(v, "tag") else None)
def test_modelled_cycles_never_beat_the_roofline(cfg, statement, extents, bind, dim_of):
    prog, dram, x, where = tiled(cfg, statement, extents, bind, dim_of)
    _, counters = run(prog, dram, cfg)
    useful = math.prod(extents.values())
    tensor_bytes = sum(a.nbytes for a in x.values()) + math.prod(where[1]) * where[2]
    rl = roofline(useful, tensor_bytes, cfg)
    t = simulate(prog, cfg)
    assert t.cycles >= rl.cycles > 0
    assert t.compute_cycles == cfg.ii * counters.insns["compute"]
    assert t.busy[0] + t.busy[2] >= -(-(counters.load_bytes + counters.store_bytes) // cfg.bytes_per_cycle)
