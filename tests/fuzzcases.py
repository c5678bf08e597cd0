"""Random compile cases and their checker, shared by tests/test_properties.py,
scripts/fuzz_campaign.py and scripts/isa_sweep.py (one implementation).

A case is plain data (operator params, the ten vta_config numbers, epilogue,
strategy, seeds), so a failure can be written to JSON and replayed with
`run_case(Case.from_dict(doc))`.

Case generation takes a `pick(lo, hi)` callable returning an int in [lo, hi]:
`random.Random(seed).randint` for the scripts, `lambda lo, hi: draw(st.integers(lo, hi))`
inside a hypothesis composite strategy for the tests.

`run_case` compiles through the real loader (accelerator_from_dict) and
`solve_and_verify`, and sorts the result into one outcome:

  verified       bit-exact in the functional model, and the independent checks below pass
  bad-input      errors.BadInput (exit 2) with a message
  no-embedding   errors.NoEmbedding (exit 3) with a message
  timeout        errors.SolverTimeout (exit 4) with a message
  WRONG PROGRAM  verification failed, ProgramError, or an independent check failed
  TRACEBACK      any other exception (or a documented error with an empty message)

The independent checks on a verified program (none reuses embedcsp.reference):
  - the binary: encode_program -> decode_program gives back the same instructions,
    every field sits where vta.md section 2 puts it for this config (a layout
    restated here from the spec: ALU source fields are ACC-depth wide, C bitfields
    on uint64 never straddle bit 64), no bit outside a field is set, and the
    micro-op words decode to the same indices under the spec's micro-op layout;
  - the result: the decoded binary runs in the functional model and its output
    equals a plain int64 numpy computation (gemm: A @ B; conv2d: per output
    pixel tensordot over (c, r, s)), wrapped to int32, then the epilogue.
"""

from __future__ import annotations

import re
import resource
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

OUTCOMES = ("verified", "bad-input", "no-embedding", "timeout", "WRONG PROGRAM", "TRACEBACK")
BAD = ("WRONG PROGRAM", "TRACEBACK")

# ------------------------------------------------------------------ configs

# VTA's default buffer depths (log2 elements): UOP 8192, INP 2048, WGT 1024, ACC 2048.
DEFAULT_LOG_DEPTH = {"UOP": 13, "INP": 11, "WGT": 10, "ACC": 11}
# No buffer larger than 4 MiB: plausible on-chip SRAM, and the functional model
# allocates every buffer in full.
MAX_LOG_BUFF_BYTES = 22


def log_elem_bytes(log_batch: int, log_block_in: int, log_block_out: int) -> dict[str, int]:
    """log2 bytes of one element of each buffer (int8 inp/wgt, int32 acc, 32-bit uops)."""
    return {"UOP": 2, "INP": log_batch + log_block_in, "WGT": log_block_out + log_block_in,
            "ACC": log_batch + log_block_out + 2}


def config_dict(log_batch: int, log_block_in: int, log_block_out: int,
                log_depth: dict[str, int]) -> dict[str, int]:
    """The ten vta_config numbers for these lanes and log2 buffer depths (in elements)."""
    elem = log_elem_bytes(log_batch, log_block_in, log_block_out)
    cfg = {"LOG_INP_WIDTH": 3, "LOG_WGT_WIDTH": 3, "LOG_ACC_WIDTH": 5, "LOG_BATCH": log_batch,
           "LOG_BLOCK_IN": log_block_in, "LOG_BLOCK_OUT": log_block_out}
    for name in ("UOP", "INP", "WGT", "ACC"):
        cfg[f"LOG_{name}_BUFF_SIZE"] = log_depth[name] + elem[name]
    return cfg


def sweep_config(log_batch: int, log_block_in: int, log_block_out: int) -> dict[str, int]:
    """The ISA sweep's buffer rule: VTA's default depths (UOP 2^13, INP 2^11, WGT 2^10,
    ACC 2^11 elements), each lowered until the buffer is at most 2^22 bytes, never below
    2 elements. The default depths fit every budget (16-bit SRAM address; micro-op
    11+11+10 = 32 bits; GEMM word 1 = 64 bits; ALU word 1 = 44 + 20 bits) and lowering
    a depth only shrinks fields, so every config is plausible-valid; which ones the
    loader still refuses (e.g. a buffer of fewer than 2 elements) is what the sweep shows.
    """
    elem = log_elem_bytes(log_batch, log_block_in, log_block_out)
    depth = {name: max(1, min(d, MAX_LOG_BUFF_BYTES - elem[name])) for name, d in DEFAULT_LOG_DEPTH.items()}
    return config_dict(log_batch, log_block_in, log_block_out, depth)


def _choice(pick, options):
    return options[pick(0, len(options) - 1)]


def draw_config(pick) -> dict[str, int]:
    """A random config valid under every budget (SRAM address, micro-op bits, both
    instruction words with ALU sources either INP- or ACC-depth wide) with buffers at
    most 2^MAX_LOG_BUFF_BYTES bytes. Depths range from 2 elements (stress the tiler) to
    2^16 (stress the loop and address fields)."""
    if pick(0, 3) == 0:  # a quarter of the cases on the default VTA
        return config_dict(0, 4, 4, DEFAULT_LOG_DEPTH)
    lb = _choice(pick, (0, 0, 0, 1, 1, 2, 3))
    lbi, lbo = pick(0, 6), pick(0, 6)
    elem = log_elem_bytes(lb, lbi, lbo)
    cap = {name: min(16, MAX_LOG_BUFF_BYTES - e) for name, e in elem.items()}

    def depth(name, hi):
        hi = min(hi, cap[name])
        if pick(0, 2) == 0:  # a third of the depths as small as allowed up to 2^4
            return pick(1, min(4, hi))
        return pick(1, hi)

    acc = depth("ACC", 11)
    inp = depth("INP", 22 - acc)  # ALU word 1: 2*acc + 2*max(acc, inp) + 20 <= 64
    wgt = depth("WGT", 32 - acc - max(acc, inp))  # micro-op: acc + max(acc, inp) + wgt <= 32
    uop = _choice(pick, (pick(1, 13), pick(5, 13), 13))
    return config_dict(lb, lbi, lbo, {"UOP": uop, "INP": inp, "WGT": wgt, "ACC": acc})


# ------------------------------------------------------------------ cases

@dataclass(frozen=True)
class Case:
    kind: str  # "gemm" | "conv2d"
    params: dict  # gemm: M N K; conv2d: N C H W K R S pad_h pad_w stride_h stride_w
    config: dict  # the ten vta_config numbers
    epilogue: tuple = ("wrap", 0)  # ("wrap", 0) | ("requant", shift)
    strategy: str = "csp"
    seed: int = 0  # input seed of solve_and_verify
    solver_seed: int = 0
    time_limit: float = 10.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["epilogue"] = list(self.epilogue)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Case:
        return cls(**{**d, "epilogue": tuple(d["epilogue"])})

    def describe(self) -> str:
        shape = " ".join(f"{k}={v}" for k, v in self.params.items())
        c = self.config
        cfg = (f"B{c['LOG_BATCH']} I{c['LOG_BLOCK_IN']} O{c['LOG_BLOCK_OUT']} buff "
               f"{c['LOG_UOP_BUFF_SIZE']}/{c['LOG_INP_BUFF_SIZE']}/{c['LOG_WGT_BUFF_SIZE']}/"
               f"{c['LOG_ACC_BUFF_SIZE']}")
        ep = "wrap" if self.epilogue[0] == "wrap" else f"requant>>{self.epilogue[1]}"
        return f"{self.kind} {shape} | {cfg} | {ep} | {self.strategy} seed {self.seed}"

    def repro(self) -> str:
        """A Python snippet that replays the case."""
        return (f"from embedcsp.targets.vta.config import VtaConfig, vta_accelerator\n"
                f"from embedcsp.operator import {self.kind}\n"
                f"from embedcsp.pipeline import Options\n"
                f"from embedcsp.reference import Epilogue\n"
                f"from embedcsp.pipeline import solve_and_verify\n"
                f"acc = vta_accelerator(VtaConfig(**{self.config!r}))\n"
                f"op = {self.kind}(**{_op_kwargs(self.kind, self.params)!r})\n"
                f"o = solve_and_verify(op, acc, Options(time_limit={self.time_limit}, seed={self.solver_seed}, "
                f"epilogue=Epilogue{tuple(self.epilogue)!r}, strategy={self.strategy!r}), seed={self.seed})\n"
                f"print(o.verification)\n")


def _op_kwargs(kind: str, params: dict) -> dict:
    if kind == "gemm":
        return {"m": params["M"], "n": params["N"], "k": params["K"]}
    return {"n": params["N"], "c": params["C"], "h": params["H"], "w": params["W"], "k": params["K"],
            "r": params["R"], "s": params["S"], "pad_h": params["pad_h"], "pad_w": params["pad_w"],
            "stride_h": params["stride_h"], "stride_w": params["stride_w"]}


def draw_gemm(pick, small: bool = False) -> dict:
    size = _choice(pick, (8, 24, 40) if small else (8, 24, 40, 80))
    return {"M": pick(1, size), "N": pick(1, size), "K": pick(1, size)}


def draw_conv(pick, small: bool = False) -> dict:
    n = _choice(pick, (1, 1, 1, 2, 3))
    c = _choice(pick, (1, 3, pick(1, 8), pick(1, 20 if small else 40)))
    k = _choice(pick, (1, pick(1, 8), pick(1, 20 if small else 40)))
    h, w = pick(1, 9 if small else 12), pick(1, 9 if small else 12)
    square = pick(0, 1) == 0
    pad_h = pick(0, 2)
    pad_w = pad_h if square else pick(0, 2)
    r = pick(1, min(5, h + 2 * pad_h))
    s = r if square and r <= w + 2 * pad_w else pick(1, min(5, w + 2 * pad_w))
    stride_h = pick(1, 3)
    stride_w = stride_h if square else pick(1, 3)
    return {"N": n, "C": c, "H": h, "W": w, "K": k, "R": r, "S": s, "pad_h": pad_h, "pad_w": pad_w,
            "stride_h": stride_h, "stride_w": stride_w}


def draw_epilogue(pick) -> tuple:
    """wrap, or requant with a shift in 0..15 (VTA's ALU reads 5 signed bits); one
    requant in eight has a shift beyond, which must be refused as bad input."""
    if pick(0, 1) == 0:
        return ("wrap", 0)
    return ("requant", pick(16, 40) if pick(0, 7) == 0 else pick(0, 15))


def draw_case(pick, kind: str | None = None, config: dict | None = None, small: bool = False) -> Case:
    """small: the CI slice's sizes (gemm dims <= 40, conv2d H, W <= 9 and C, K <= 20)."""
    kind = kind or _choice(pick, ("gemm", "conv2d"))
    params = draw_gemm(pick, small) if kind == "gemm" else draw_conv(pick, small)
    return Case(kind=kind, params=params, config=config or draw_config(pick), epilogue=draw_epilogue(pick),
                strategy=_choice(pick, ("csp", "reference")), seed=pick(0, 9999), solver_seed=pick(0, 3))


# ------------------------------------------------------------------ results

@dataclass
class Result:
    outcome: str
    message: str = ""
    seconds: float = 0.0
    checked: int = 0  # outputs compared bit for bit (verified cases)
    independent: bool = False  # the independent checks ran
    trace: str = ""
    extra: dict = field(default_factory=dict)

    def head(self) -> str:
        """One line naming the failure: the message, or the traceback's last line."""
        if self.trace:
            last = [line for line in self.trace.strip().splitlines() if line.strip()]
            return last[-1] if last else self.message
        return self.message.splitlines()[0] if self.message else ""


def build_operator(case: Case):
    from embedcsp.operator import conv2d, gemm

    return (gemm if case.kind == "gemm" else conv2d)(**_op_kwargs(case.kind, case.params))


def load_config(config: dict, name: str = "fuzz"):
    """The real loader, as an ISA file would be read."""
    from embedcsp.accelerator import accelerator_from_dict

    doc = {"accelerator": {"name": name, "family": "vta"}, "vta_config": dict(config),
           "intrinsic": {"statement": "acc[b,o] += inp[b,i] * wgt[o,i]",
                         "lanes": {"b": "BATCH", "o": "BLOCK_OUT", "i": "BLOCK_IN"}}}
    return accelerator_from_dict(doc, name)


def _documented(exc: Exception) -> str | None:
    from embedcsp.errors import BadInput, NoEmbedding, SolverTimeout

    for cls, name, code in ((BadInput, "bad-input", 2), (NoEmbedding, "no-embedding", 3),
                            (SolverTimeout, "timeout", 4)):
        if isinstance(exc, cls) and exc.exit_code == code:
            return name
    return None


def run_case(case: Case, independent: bool = True) -> Result:
    """Compile, verify and check one case; never raises."""
    from embedcsp.errors import ProgramError
    from embedcsp.pipeline import Options, solve_and_verify
    from embedcsp.reference import Epilogue

    start = time.perf_counter()
    try:
        acc = load_config(case.config)
        op = build_operator(case)
        options = Options(time_limit=case.time_limit, seed=case.solver_seed,
                          epilogue=Epilogue(*case.epilogue), strategy=case.strategy)
        outcome = solve_and_verify(op, acc, options, seed=case.seed)
    except ProgramError as exc:
        return Result("WRONG PROGRAM", f"ProgramError: {exc}", time.perf_counter() - start,
                      trace=traceback.format_exc())
    except Exception as exc:  # noqa: BLE001 - sorting every exception is the point
        name = _documented(exc)
        if name and str(exc).strip():
            return Result(name, str(exc), time.perf_counter() - start)
        why = "documented error with an empty message" if name else f"{type(exc).__name__}: {exc}"
        return Result("TRACEBACK", why, time.perf_counter() - start, trace=traceback.format_exc())
    v = outcome.verification
    if not v.ok or v.mismatches:
        return Result("WRONG PROGRAM", f"verification: {v.mismatches} of {v.checked} outputs differ; "
                      f"first {v.first_mismatch}", time.perf_counter() - start, checked=v.checked)
    if independent:
        try:
            problem = independent_check(case, outcome)
        except Exception as exc:  # noqa: BLE001
            return Result("TRACEBACK", f"independent check: {type(exc).__name__}: {exc}",
                          time.perf_counter() - start, checked=v.checked, trace=traceback.format_exc())
        if problem:
            return Result("WRONG PROGRAM", problem, time.perf_counter() - start, checked=v.checked,
                          independent=True)
    return Result("verified", "", time.perf_counter() - start, checked=v.checked, independent=independent)


def limit_memory(gb: float) -> None:
    """Cap this process's address space (the scripts' workers): a blow-up becomes a
    MemoryError on the case instead of the OOM killer taking the worker."""
    limit = int(gb * 2**30)
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or limit <= hard:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


# ------------------------------------------------------------------ grouping and shrinking failures

def signature(result: Result) -> str:
    """What makes two failures the same bug: the innermost embedcsp frame and the
    exception type, or the message with its numbers blanked."""
    if result.trace:
        frames = re.findall(r'File "([^"]*embedcsp[^"]*)", line (\d+), in (\w+)', result.trace)
        frames = [f for f in frames if "/tests/" not in f[0]]
        head = re.sub(r"-?\d+", "#", result.head())[:80]
        if frames:
            path, _line, func = frames[-1]
            return f"{result.outcome}: {Path(path).name}:{func}: {head}"
        return f"{result.outcome}: {head}"
    return f"{result.outcome}: " + re.sub(r"-?\d+", "#", result.message)[:90]


def _smaller(case: Case):
    """Candidate simplifications, most aggressive first."""
    p = case.params
    for key, value in p.items():
        lo = 0 if key.startswith("pad") else 1
        for v in sorted({lo, value // 2, value - 1}):
            if lo <= v < value:
                yield Case(**{**case.__dict__, "params": {**p, key: v}})
    if case.epilogue != ("wrap", 0):
        yield Case(**{**case.__dict__, "epilogue": ("wrap", 0)})
    if case.strategy != "csp":
        yield Case(**{**case.__dict__, "strategy": "csp"})
    if case.seed or case.solver_seed:
        yield Case(**{**case.__dict__, "seed": 0, "solver_seed": 0})


def shrink(case: Case, sig: str, budget: float = 20.0) -> Case:
    """Greedy: take any simplification that keeps the same signature, until none does
    or the budget (seconds, checked between candidates) is spent."""
    deadline = time.monotonic() + budget
    improved = True
    while improved:
        improved = False
        for cand in _smaller(case):
            if time.monotonic() > deadline:
                return case
            try:
                build_operator(cand)
            except Exception:  # noqa: BLE001, S112 - an invalid shape is just not a candidate
                continue
            if signature(run_case(cand)) == sig:
                case, improved = cand, True
                break
    return case


# ------------------------------------------------------------------ independent checks

def independent_check(case: Case, outcome) -> str | None:
    """None if the program's binary and its result agree with the spec and plain numpy;
    else what differs."""
    from embedcsp.targets.vta.codegen import dram_image, output_dram
    from embedcsp.targets.vta.encoding import decode_program, encode_program
    from embedcsp.targets.vta.execute import execute_image

    program = outcome.compiled.program
    cfg = program.config
    insns = list(program.insns)
    raw = encode_program(insns, cfg)
    problem = check_binary(raw, insns, program.uops, cfg)
    if problem:
        return problem
    decoded = decode_program(raw, cfg)
    if decoded != insns:
        at = next(i for i, (a, b) in enumerate(zip(decoded, insns)) if a != b)
        return f"binary round trip: instruction {at} decodes as {decoded[at]}, was {insns[at]}"
    op = outcome.compiled.operator
    dram = dram_image(program, outcome.inputs)
    out_dram = output_dram(program, op.output.shape)
    got, _ = execute_image(decoded, dram, cfg, outcome.compiled.accelerator.pattern, out_dram)
    want = ground_truth(case, outcome.inputs)
    if got.shape != want.shape or not np.array_equal(got, want):
        bad = np.argwhere(got != want) if got.shape == want.shape else None
        where = tuple(int(i) for i in bad[0]) if bad is not None and len(bad) else None
        n_bad = len(bad) if bad is not None else "all"
        detail = f"first at {list(where)}: got {int(got[where])}, numpy {int(want[where])}" if where else \
            f"shape {got.shape} vs {want.shape}"
        return f"independent numpy: {n_bad} of {want.size} outputs differ; {detail}"
    return None


def wrap_int32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) % (1 << 32)) - (1 << 31)


def apply_epilogue(acc32: np.ndarray, epilogue: tuple) -> np.ndarray:
    kind, shift = epilogue
    if kind == "wrap":  # the low 8 bits, read as signed
        return (((acc32 & 0xFF) ^ 0x80) - 0x80).astype(np.int8)
    return np.clip(acc32 >> shift, -128, 127).astype(np.int8)  # arithmetic shift on int64


def ground_truth(case: Case, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Plain int64 numpy: nothing from embedcsp."""
    p = case.params
    if case.kind == "gemm":
        acc = inputs["A"].astype(np.int64) @ inputs["B"].astype(np.int64)
    else:
        data = inputs["data"].astype(np.int64)
        weight = inputs["weight"].astype(np.int64)
        ph, pw, sh, sw, r, s = p["pad_h"], p["pad_w"], p["stride_h"], p["stride_w"], p["R"], p["S"]
        padded = np.pad(data, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        out_h = (p["H"] + 2 * ph - r) // sh + 1
        out_w = (p["W"] + 2 * pw - s) // sw + 1
        acc = np.zeros((p["N"], p["K"], out_h, out_w), np.int64)
        for y in range(out_h):
            for x in range(out_w):
                patch = padded[:, :, y * sh:y * sh + r, x * sw:x * sw + s]  # [n, c, r, s]
                acc[:, :, y, x] = np.tensordot(patch, weight, axes=([1, 2, 3], [1, 2, 3]))
    return apply_epilogue(wrap_int32(acc), case.epilogue)


# The instruction layouts of vta.md section 2, restated from the tables.
_HDR = (("opcode", 3), ("pop_prev", 1), ("pop_next", 1), ("push_prev", 1), ("push_next", 1))


def _log_depths(cfg) -> tuple[int, int, int, int]:
    """(uop, inp, wgt, acc) log2 depths from the raw config numbers."""
    e = log_elem_bytes(cfg.LOG_BATCH, cfg.LOG_BLOCK_IN, cfg.LOG_BLOCK_OUT)
    return (cfg.LOG_UOP_BUFF_SIZE - e["UOP"], cfg.LOG_INP_BUFF_SIZE - e["INP"],
            cfg.LOG_WGT_BUFF_SIZE - e["WGT"], cfg.LOG_ACC_BUFF_SIZE - e["ACC"])


def spec_layouts(cfg) -> dict[str, list[tuple[str, int, int]]]:
    """Field name -> (bit position, width) per instruction kind, per hw_spec.h."""
    u, i, w, a = _log_depths(cfg)
    loop = (("reset", 1), ("uop_bgn", u), ("uop_end", u + 1), ("iter_out", 14), ("iter_in", 14))
    specs = {
        "mem": _HDR + (("memory_type", 3), ("sram_base", 16), ("dram_base", 32), ("y_size", 16),
                       ("x_size", 16), ("x_stride", 16), ("y_pad_0", 4), ("y_pad_1", 4),
                       ("x_pad_0", 4), ("x_pad_1", 4)),
        "gemm": _HDR + loop + (("dst_factor_out", a), ("dst_factor_in", a), ("src_factor_out", i),
                               ("src_factor_in", i), ("wgt_factor_out", w), ("wgt_factor_in", w)),
        # VTAAluInsn: the source is the accumulator, so src fields are ACC-depth wide.
        "alu": _HDR + loop + (("dst_factor_out", a), ("dst_factor_in", a), ("src_factor_out", a),
                              ("src_factor_in", a), ("alu_opcode", 3), ("use_imm", 1), ("imm", 16)),
        "finish": _HDR,
    }
    out = {}
    for kind, spec in specs.items():
        placed, pos = [], 0
        for name, width in spec:
            if pos // 64 != (pos + width - 1) // 64:  # a uint64 bitfield never straddles a word
                pos = (pos // 64 + 1) * 64
            placed.append((name, pos, width))
            pos += width
        out[kind] = placed
    return out


def _insn_kind(insn) -> str:
    return {0: "mem", 1: "mem", 2: "gemm", 3: "finish", 4: "alu"}[insn.opcode]


def _want_value(insn, name: str) -> int:
    if name in ("pop_prev", "pop_next", "push_prev", "push_next"):
        return int(getattr(insn.deps, name))
    return int(getattr(insn, name))


def check_binary(raw: bytes, insns: list, uops: np.ndarray, cfg) -> str | None:
    """Every encoded field where the spec puts it, and nothing else set."""
    lay = spec_layouts(cfg)
    if len(raw) != 16 * len(insns):
        return f"binary: {len(raw)} bytes for {len(insns)} instructions"
    for n, insn in enumerate(insns):
        word = int.from_bytes(raw[16 * n:16 * n + 16], "little")
        kind = _insn_kind(insn)
        covered = 0
        for name, pos, width in lay[kind]:
            covered |= ((1 << width) - 1) << pos
            got = (word >> pos) & ((1 << width) - 1)
            want = _want_value(insn, name)
            if name == "imm":
                want &= (1 << width) - 1
            if got != want:
                return (f"binary: instruction {n} ({type(insn).__name__}) field {name} reads {got} at bits "
                        f"[{pos + width - 1}:{pos}] per vta.md, should be {want}")
        if word & ~covered:
            return f"binary: instruction {n} ({type(insn).__name__}) sets bits outside its fields: {word & ~covered:#x}"
    # Micro-ops: dst (acc depth bits), src (max(acc, inp) bits), wgt (wgt depth bits), from bit 0.
    _, i, w, a = _log_depths(cfg)
    from embedcsp.targets.vta.encoding import decode_uops

    words = np.asarray(uops, dtype=np.uint64).reshape(-1)
    src_bits = max(a, i)
    spec = (words & ((1 << a) - 1), (words >> a) & ((1 << src_bits) - 1),
            (words >> (a + src_bits)) & ((1 << w) - 1))
    theirs = decode_uops(np.asarray(uops, dtype=np.uint32).reshape(-1), cfg)
    for name, s, t in zip(("dst", "src", "wgt"), spec, theirs):
        if not np.array_equal(s.astype(np.int64), np.asarray(t, dtype=np.int64)):
            return f"micro-op {name} indices differ between vta.md's layout and the functional model's"
    if a + src_bits + w < 32 and np.any(words >> (a + src_bits + w)):
        return "micro-op words set bits above their fields"
    return None
