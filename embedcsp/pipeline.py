"""The compile pipeline as a visible chain of named stages.

    operator --solve_embedding--> Embedding --check_scalar--> Embedding
             --family.build (plans, programs, ranked by the family's cycle model)--> Plan, Program
             --family.execute + ground truth (verify.run_program)--> Verification
             --family.cost, family.roofline--> Timing, Roofline        (solve_and_verify: an Outcome)

Each stage is a pure function of frozen data; `compile_operator` only chains
them and times each one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from embedcsp.accelerator import Accelerator
from embedcsp.csp import Pins, SolveReport, solve_alternatives, solve_embedding
from embedcsp.embedding import Embedding, check_scalar, sample_instances
from embedcsp.errors import BadInput, NoEmbedding, SolverTimeout
from embedcsp.layout import HostTransform, host_transform
from embedcsp.operator import MAX_DRAM_BYTES, Operator
from embedcsp.placements import Placement, placements
from embedcsp.progress import SILENT, Progress
from embedcsp.reference import Epilogue, random_inputs
from embedcsp.targets.registry import family
from embedcsp.verify import Verification, run_program


@dataclass(frozen=True)
class Options:
    time_limit: float = 10.0  # seconds for the CSP
    seed: int = 0
    epilogue: Epilogue | None = None  # None: the family's default (the first it lists)
    double_buffer: bool = True
    strategy: str = "csp"  # "csp": the solver chooses; "reference": VTA's fixed TVM mapping
    board: str | None = None  # the cycle model's board, which also ranks the plans; None: the family's
    plan_candidates: int = 8  # best plans by estimate that the cycle model re-ranks
    # Embeddings the cycle model chooses among (strategy csp): the solver's best, up to this
    # many others within (1 + padding_slack) x its padded MACs, and the family's reference.
    alternatives: int = 4
    padding_slack: float = 0.02
    placements: bool = True  # also cost the placements beyond whole dims (embedcsp/placements/)


MAX_SEED = 2**31 - 1  # CP-SAT's random_seed is a signed 32-bit field


def check_seed(seed: int, flag: str = "--seed") -> int:
    """Seeds seed both CP-SAT and numpy; accept what both take."""
    if not 0 <= seed <= MAX_SEED:
        raise BadInput(f"{flag} must be within 0..{MAX_SEED}, got {seed}")
    return seed


def check_time_limit(seconds: float) -> float:
    """A finite, positive number of seconds (nan compares false with everything)."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise BadInput(f"--time-limit must be a positive number of seconds, got {seconds}")
    return seconds


@dataclass(frozen=True)
class Candidate:
    """One embedding the cycle model costed for strategy csp (docs/choice.md)."""

    # "solver" (the CSP's best), "alternative" (enumerated, or the best in another layout form),
    # "reference", or the name of a placement beyond whole dims ("banded", "block-diagonal")
    source: str
    embedding: str  # Embedding.brief()
    padded_macs: int
    cycles: int | None  # the family's modelled cycles of its best plan; None: it has no program
    note: str = ""  # why it has no program

    def as_dict(self) -> dict:
        return {"source": self.source, "embedding": self.embedding, "padded_macs": self.padded_macs,
                "cycles": self.cycles, **({"note": self.note} if self.note else {})}


@dataclass(frozen=True, eq=False)
class Compiled:
    operator: Operator
    accelerator: Accelerator
    options: Options
    embedding: Embedding
    report: SolveReport
    plan: Any  # the family's plan and program (targets/<family>/)
    program: Any
    seconds: dict[str, float] = field(default_factory=dict)  # per stage
    candidates: tuple[Candidate, ...] = ()  # what the cycle model chose among (strategy csp)
    # The placement whose statement `embedding` embeds (its operator is then that statement, over
    # this operator's tensors); None when the embedding is of `operator` itself.
    placement: Placement | None = None

    @property
    def efficiency(self) -> float:
        """The operator's useful MACs / the MACs the program issues. A placement's statement has
        more points than the operator (those that read a zero or write nowhere): they count as
        padding here, not in `embedding.efficiency`, which is of the statement it embeds."""
        return self.operator.macs / self.embedding.padded_macs

    @property
    def form(self) -> str:
        """The placement's name where there is one, else the family's layout form ('matrix', 'direct')."""
        return self.placement.name if self.placement else self.embedding.form

    def embedding_summary(self) -> dict:
        """The embedding as manifests and --json give it, with the operator's padding efficiency."""
        return {**self.embedding.summary(), "padding_efficiency": self.efficiency,
                **({"placement": self.placement.as_dict()} if self.placement else {})}


def compile_operator(op: Operator, acc: Accelerator, options: Options = Options(),
                     progress: Progress = SILENT) -> Compiled:
    """Solve the embedding, plan, generate the program: the chain of stages, timed.

    Raises BadInput (sizes beyond what can be built), NoEmbedding (the instruction
    does not fit the operator, or no tiling fits the buffers) or SolverTimeout.
    The program is not executed here: `embedcsp.run` or `solve_and_verify` do that.
    """
    logical = sum(t.size for t in op.tensors)
    if logical > MAX_DRAM_BYTES:
        raise BadInput(f"{op.describe()} has {logical / 2**30:.1f} GiB of tensors; embedcsp builds "
                       f"and checks DRAM images up to {MAX_DRAM_BYTES >> 30} GiB")
    fam = family(acc.family)
    options = replace(options, epilogue=family_epilogue(acc, options.epilogue),
                      board=options.board or fam.default_board)
    fam.check_board(options.board)
    seconds = {}
    t0 = time.perf_counter()
    progress.stage("solving the embedding")
    if options.strategy == "reference":
        embedding, report = _solve(op, acc, options, fam.reference_pins(op))
        candidates: tuple[Candidate, ...] = ()
        placement = None
    else:
        embedding, report, candidates, placement = _choose(op, acc, options, progress)
    t1 = time.perf_counter()
    progress.stage("planning and generating code")
    plan, program = fam.build(embedding, options)
    t2 = time.perf_counter()
    seconds.update(solve=t1 - t0, plan_and_codegen=t2 - t1)
    return Compiled(op, acc, options, embedding, report, plan, program, seconds, candidates, placement)


def _choose(op: Operator, acc: Accelerator, options: Options, progress: Progress
            ) -> tuple[Embedding, SolveReport, tuple[Candidate, ...], Placement | None]:
    """Strategy csp: the solver's best embedding, its near-optimal alternatives, the best
    embedding of each placement beyond whole dims (embedcsp/placements/) and the family's
    reference, each costed by the family's cycle model; the fewest modelled cycles wins (ties:
    that order). Since the reference is one of them, ours is never slower than it."""
    fam = family(acc.family)
    best, report = _solve(op, acc, options, Pins())
    pool: list[tuple[str, Embedding, Placement | None]] = [("solver", best, None)]
    budget = options.time_limit / max(1, options.alternatives)
    if options.alternatives > 0:
        for emb, _ in solve_alternatives(op, acc, best, report, options.alternatives, options.padding_slack,
                                         budget, options.seed):
            check_scalar(emb, sample_instances(emb, options.seed))
            pool.append(("alternative", emb, None))
    have = {emb.form for _, emb, _ in pool}
    pool += [("alternative", emb, None) for emb in _other_forms(op, acc, options, budget, have)]
    if options.placements:
        for placement in placements(op, acc):
            pool += [(placement.name, emb, placement)
                     for emb in _other_forms(placement.operator, acc, options, budget, set())]
    if fam.reference is not None:
        try:
            pool.append(("reference", _solve(op, acc, options, fam.reference_pins(op))[0], None))
        except NoEmbedding:
            pass  # the family has no fixed mapping for this operator
    progress.stage(f"costing {len(pool)} embeddings in the cycle model")
    costed = []
    for source, emb, _ in pool:
        try:
            cycles, note = modelled_cycles(emb, options), ""
        except NoEmbedding as exc:
            cycles, note = None, str(exc)
        costed.append(Candidate(source, emb.brief(), emb.padded_macs, cycles, note))
    usable = [i for i, c in enumerate(costed) if c.cycles is not None]
    if not usable:
        # Every candidate's layout overflows some buffer (a direct form on a variant with a tiny
        # INP buffer): the packed matrix form is the last resort.
        emb, rep = _solve(op, acc, options, Pins(form="matrix"))
        return emb, rep, tuple(costed), None
    # Ties go to the reference (the same speed, and a program the bench then verifies once).
    chosen = min(usable, key=lambda i: (costed[i].cycles, costed[i].source != "reference", i))
    _, emb, placement = pool[chosen]
    return emb, report, tuple(costed), placement


def _other_forms(op: Operator, acc: Accelerator, options: Options, budget: float, have: set[str]) -> list[Embedding]:
    """The best embedding of `op` in each layout form (the packed matrix and the family's own)
    not in `have`: the CSP ranks padding first, and a form that pads a little more may move far
    fewer bytes (a banded statement in VTA's direct form)."""
    forms = ["matrix"] + [f.name for f in family(acc.family).forms if f.unsupported(op) is None]
    found = [_try_solve(op, acc, options, budget, Pins(form=form)) for form in forms if form not in have]
    return [emb for emb in found if emb is not None]


def _try_solve(op: Operator, acc: Accelerator, options: Options, budget: float, pins: Pins) -> Embedding | None:
    """A pool candidate: the best embedding under `pins` within `budget` seconds, or None where
    there is none (or none in time): a candidate that cannot be had is simply not in the pool."""
    try:
        return _solve(op, acc, replace(options, time_limit=budget), pins)[0]
    except (NoEmbedding, SolverTimeout):
        return None


def modelled_cycles(embedding: Embedding, options: Options) -> int:
    """The family's modelled cycles of the program it would build for `embedding`: its own fast
    `modelled_cycles` where it has one (docs/targets.md), else the program built and costed."""
    fam = family(embedding.accelerator.family)
    fast = getattr(fam, "modelled_cycles", None)
    if fast is not None:
        return fast(embedding, options)
    plan, program = fam.build(embedding, options)
    return fam.cost(Compiled(embedding.operator, embedding.accelerator, options, embedding,
                             SolveReport("OPTIMAL", 0, 0, 0.0), plan, program)).cycles


@dataclass(frozen=True, eq=False)
class Outcome:
    compiled: Compiled
    verification: Verification
    transforms: list[HostTransform]
    inputs: dict[str, np.ndarray]
    seed: int
    timing: Any  # the family's cycle model: .cycles, .seconds, .as_dict()
    roofline: Any  # the family's bound: .cycles, .efficiency(cycles)


def host_transforms(compiled: Compiled) -> list[HostTransform]:
    """What the host does to each input tensor to lay it out for the accelerator.

    A family's program has `element_maps`, keyed by pattern operand (docs/targets.md)."""
    emb, op = compiled.embedding, compiled.operator
    return [host_transform(emb.bound[q.name], op.tensor(emb.bound[q.name]).size,
                           compiled.program.element_maps[q.name])
            for q in compiled.accelerator.pattern.inputs]


def solve_and_verify(op: Operator, acc: Accelerator, options: Options, seed: int = 0,
                     progress: Progress = SILENT) -> Outcome:
    """Compile, execute in the functional model on random inputs and compare bit for bit, then cost."""
    return verify_and_cost(compile_operator(op, acc, options, progress), seed, progress)


def verify_and_cost(compiled: Compiled, seed: int = 0, progress: Progress = SILENT,
                    same_program: Outcome | None = None) -> Outcome:
    """Execute a compiled program on random inputs, compare bit for bit, then cost it.

    `same_program`: an outcome whose program is this one's (`same_program_as`), whose
    verification on the same inputs then stands for this one instead of a second run."""
    op, acc = compiled.operator, compiled.accelerator
    if same_program is not None and same_program.seed == seed and same_program_as(compiled, same_program.compiled):
        inputs, verification = same_program.inputs, same_program.verification
    else:
        inputs = random_inputs(op, seed)
        progress.stage("verifying in the functional model")
        verification = run_program(compiled, inputs, progress).verification
    progress.stage("costing")
    transforms = host_transforms(compiled)
    fam = family(acc.family)
    timing, bound = fam.cost(compiled), fam.roofline(compiled)
    if timing.cycles < bound.cycles:  # a bound the model beats is not a bound (docs/roofline.md)
        raise RuntimeError(f"internal: {acc.family}'s cycle model gives {op.describe()} {timing.cycles} "
                           f"cycles, below its roofline of {bound.cycles}")
    return Outcome(compiled, verification, transforms, inputs, seed, timing, bound)


def same_program_as(a: Compiled, b: Compiled) -> bool:
    """True when `a` and `b` are one program: a family's `build` is a pure function of the
    embedding and the options it reads (all but the strategy), so equal embeddings under equal
    options give equal programs."""
    return (a.operator == b.operator and a.accelerator.digest == b.accelerator.digest
            and a.embedding == b.embedding and replace(a.options, strategy="") == replace(b.options, strategy=""))


def family_epilogue(acc: Accelerator, epilogue: Epilogue | None) -> Epilogue:
    """The epilogue a program on `acc` will apply: the family's default for None, a requant's
    rounding filled in; BadInput for one the family's hardware cannot do (docs/epilogues.md)."""
    offered = family(acc.family).epilogues
    if epilogue is None:
        kind, _, rounding = offered[0].partition("/")
        return Epilogue(kind, rounding=rounding)
    epilogue = epilogue.resolve(offered)
    if epilogue.name not in offered:
        raise BadInput(f"the {acc.family} family cannot apply the {epilogue.name} epilogue; "
                       f"{acc.name} offers {', '.join(offered)}")
    return epilogue


def _solve(op: Operator, acc: Accelerator, options: Options, pins: Pins) -> tuple[Embedding, SolveReport]:
    """The CSP, then its answer expanded back to scalar nodes and checked."""
    embedding, report = solve_embedding(op, acc, options.time_limit, options.seed, pins)
    check_scalar(embedding, sample_instances(embedding, options.seed))
    return embedding, report
