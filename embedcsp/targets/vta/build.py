"""From an embedding to VTA's best program: the planner's candidates, generated and ranked
by the cycle model (the family's `build`)."""

from __future__ import annotations

from embedcsp.embedding import Embedding
from embedcsp.errors import NoEmbedding
from embedcsp.pipeline import Options
from embedcsp.targets.vta.codegen import Program, UopOverflow, element_maps, generate
from embedcsp.targets.vta.direct import direct_plans
from embedcsp.targets.vta.plan import Plan, candidate_plans
from embedcsp.targets.vta.timing import board, simulate

# Re-ranking generates a program per candidate; beyond this many tile steps the
# estimate's first choice is kept (the largest GEMMs take seconds per program).
RERANK_MAX_STEPS = 4000


def best_program(embedding: Embedding, options: Options) -> tuple[Plan, Program]:
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
