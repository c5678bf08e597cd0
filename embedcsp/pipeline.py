"""The compile pipeline as a visible chain of named stages.

    operator --solve_embedding--> Embedding --make_plan--> Plan --generate--> Program

Each stage is a pure function of frozen data; `compile_operator` only chains
them and times each one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from embedcsp.accelerator import Accelerator
from embedcsp.codegen import Program, generate
from embedcsp.csp import Pins, SolveReport, reference_pins, solve_embedding
from embedcsp.embedding import Embedding, check_scalar, sample_instances
from embedcsp.operator import Operator
from embedcsp.errors import BadInput
from embedcsp.plan import MAX_DRAM_BYTES, Plan, make_plan
from embedcsp.reference import Epilogue


@dataclass(frozen=True)
class Options:
    time_limit: float = 10.0  # seconds for the CSP
    seed: int = 0
    epilogue: Epilogue = Epilogue()
    double_buffer: bool = True
    strategy: str = "csp"  # "csp": the solver chooses; "reference": VTA's fixed TVM mapping


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


def compile_operator(op: Operator, acc: Accelerator, options: Options = Options()) -> Compiled:
    logical = sum(t.size for t in op.tensors)
    if logical > MAX_DRAM_BYTES:
        raise BadInput(f"{op.describe()} has {logical / 2**30:.1f} GiB of tensors; embedcsp builds "
                       f"and checks DRAM images up to {MAX_DRAM_BYTES >> 30} GiB")
    seconds = {}
    t0 = time.perf_counter()
    pins = reference_pins(op) if options.strategy == "reference" else Pins()
    embedding, report = solve_embedding(op, acc, options.time_limit, options.seed, pins)
    check_scalar(embedding, sample_instances(embedding, options.seed))
    t1 = time.perf_counter()
    plan = make_plan(embedding, options.double_buffer)
    t2 = time.perf_counter()
    program = generate(plan, options.epilogue)
    t3 = time.perf_counter()
    seconds.update(solve=t1 - t0, plan=t2 - t1, codegen=t3 - t2)
    return Compiled(op, acc, options, embedding, report, plan, program, seconds)
