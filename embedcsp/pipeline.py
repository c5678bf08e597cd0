"""The compile pipeline as a visible chain of named stages.

    operator --solve_embedding--> Embedding --candidate_plans--> Plans --generate--> Programs
             --simulate (cycle model)--> the fastest Program

Each stage is a pure function of frozen data; `compile_operator` only chains
them and times each one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from embedcsp.accelerator import Accelerator
from embedcsp.csp import Pins, SolveReport, reference_pins, solve_embedding
from embedcsp.embedding import Embedding, check_scalar, sample_instances
from embedcsp.errors import BadInput, NoEmbedding
from embedcsp.operator import Operator
from embedcsp.progress import SILENT, Progress
from embedcsp.reference import Epilogue
from embedcsp.targets.vta.codegen import Program, UopOverflow, element_maps, generate
from embedcsp.targets.vta.direct import direct_plans
from embedcsp.targets.vta.plan import MAX_DRAM_BYTES, Plan, candidate_plans
from embedcsp.targets.vta.timing import board, simulate


@dataclass(frozen=True)
class Options:
    time_limit: float = 10.0  # seconds for the CSP
    seed: int = 0
    epilogue: Epilogue = Epilogue()
    double_buffer: bool = True
    strategy: str = "csp"  # "csp": the solver chooses; "reference": VTA's fixed TVM mapping
    board: str = "pynq"  # the cycle model's board, which also ranks the plans
    plan_candidates: int = 8  # best plans by estimate that the cycle model re-ranks


@dataclass(frozen=True, eq=False)
class Compiled:
    operator: Operator
    accelerator: Accelerator
    options: Options
    embedding: Embedding
    report: SolveReport
    plan: Plan
    program: Program
    seconds: dict[str, float] = field(default_factory=dict)  # per stage


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
    seconds = {}
    t0 = time.perf_counter()
    progress.stage("solving the embedding")
    pins = reference_pins(op) if options.strategy == "reference" else Pins()
    embedding, report = _solve(op, acc, options, pins)
    t1 = time.perf_counter()
    progress.stage("planning and generating code")
    try:
        plan, program = _best_program(embedding, options)
    except NoEmbedding:
        if embedding.form != "direct" or options.strategy != "csp":
            raise
        # The direct form won on bytes but no tiling of it fits the buffers (a variant
        # with a tiny INP buffer): the packed matrix form is the next best choice.
        embedding, report = _solve(op, acc, options, replace(pins, form="matrix"))
        plan, program = _best_program(embedding, options)
    t2 = time.perf_counter()
    seconds.update(solve=t1 - t0, plan_and_codegen=t2 - t1)
    return Compiled(op, acc, options, embedding, report, plan, program, seconds)


def _solve(op: Operator, acc: Accelerator, options: Options, pins: Pins) -> tuple[Embedding, SolveReport]:
    """The CSP, then its answer expanded back to scalar nodes and checked."""
    embedding, report = solve_embedding(op, acc, options.time_limit, options.seed, pins)
    check_scalar(embedding, sample_instances(embedding, options.seed))
    return embedding, report


# Re-ranking generates a program per candidate; beyond this many tile steps the
# estimate's first choice is kept (the largest GEMMs take seconds per program).
RERANK_MAX_STEPS = 4000


def _best_program(embedding: Embedding, options: Options) -> tuple[Plan, Program]:
    """The planner's best few tilings, compiled and ranked by the cycle model.

    Tilings whose micro-op kernels overflow the UOP buffer are skipped; a plan
    beyond RERANK_MAX_STEPS is taken as the estimate ranks it, unsimulated.
    """
    b = board(options.board)
    if embedding.form == "direct":
        plans = direct_plans(embedding, options.double_buffer, b.bus_bytes)
    else:
        plans = candidate_plans(embedding, options.double_buffer, b.bus_bytes, options.plan_candidates)
    maps = element_maps(plans[0])
    best = None
    ranked = 0
    for plan in plans:
        if best is not None and plan.steps > RERANK_MAX_STEPS:
            continue
        try:
            program = generate(plan, options.epilogue, maps)
        except UopOverflow:
            continue
        if best is None and plan.steps > RERANK_MAX_STEPS:
            return plan, program
        cycles = simulate(list(program.insns), program.config, b).cycles
        if best is None or cycles < best[0]:
            best = (cycles, plan, program)
        ranked += 1
        if ranked == options.plan_candidates:
            break
    if best is None:
        raise NoEmbedding("no tiling's micro-op kernels fit this VTA's UOP buffer")
    return best[1], best[2]
