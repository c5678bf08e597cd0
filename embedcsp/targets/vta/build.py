"""From an embedding to VTA's best program: the planner's candidates, ranked by the cycle model
at tile-step granularity (stepcost.py), the winner generated (the family's `build`)."""

from __future__ import annotations

from embedcsp.embedding import Embedding
from embedcsp.errors import NoEmbedding
from embedcsp.pipeline import Options
from embedcsp.targets.vta.codegen import Program, UopOverflow, element_maps, generate
from embedcsp.targets.vta.direct import direct_plans
from embedcsp.targets.vta.plan import Plan, candidate_plans
from embedcsp.targets.vta.stepcost import plan_cycles
from embedcsp.targets.vta.timing import board

NO_PLAN = "no tiling's micro-op kernels fit this VTA's UOP buffer"


def ranked_plans(embedding: Embedding, options: Options) -> list[tuple[int, Plan]]:
    """(modelled cycles, plan) of the planner's best `plan_candidates` tilings by its estimate,
    fastest first by the cycle model; tilings whose micro-ops overflow the UOP buffer are left
    out. Every size is costed: the step-level model needs no program."""
    b = board(options.board)
    if embedding.form == "direct":
        plans = direct_plans(embedding, options.double_buffer, b.bus_bytes)
    else:
        plans = candidate_plans(embedding, options.double_buffer, b.bus_bytes, options.plan_candidates)
    ranked = []
    for order, plan in enumerate(plans):
        try:
            ranked.append((plan_cycles(plan, options.epilogue, b), order, plan))
        except UopOverflow:
            continue
        if len(ranked) == options.plan_candidates:
            break
    ranked.sort(key=lambda item: item[:2])  # ties: the estimate's order
    return [(cycles, plan) for cycles, _, plan in ranked]


def modelled_cycles(embedding: Embedding, options: Options) -> int:
    """The cycles of the program `best_program` would build, without building it."""
    ranked = ranked_plans(embedding, options)
    if not ranked:
        raise NoEmbedding(NO_PLAN)
    return ranked[0][0]


def best_program(embedding: Embedding, options: Options) -> tuple[Plan, Program]:
    """The fastest of the planner's tilings by the cycle model, generated."""
    ranked = ranked_plans(embedding, options)
    if not ranked:
        raise NoEmbedding(NO_PLAN)
    plan = ranked[0][1]
    return plan, generate(plan, options.epilogue, element_maps(plan))
