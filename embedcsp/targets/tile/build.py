"""From an embedding to the best tile program: the planner's candidates, generated and ranked
by the cycle model (the family's `build`)."""

from __future__ import annotations

from embedcsp.embedding import Embedding
from embedcsp.errors import BadInput, NoEmbedding
from embedcsp.targets.tile.blocked import blocked
from embedcsp.targets.tile.codegen import Layout, Program, generate, make_layout
from embedcsp.targets.tile.fastsim import simulate_records
from embedcsp.targets.tile.plan import Plan, candidate_plans

EPILOGUES = ("int32", "wrap", "saturate")  # what a Store can do; the first is the default
# One record per instruction instance (docs/tile.md section 10): beyond this many Computes
# the program (64 bytes a record) and the arrays that build it no longer fit comfortably.
MAX_COMPUTES = 1 << 23
# Ranking generates and simulates a program per candidate; beyond this many records the
# estimate's first choice is kept.
RERANK_MAX_RECORDS = 300_000


def check_epilogue(cfg, epilogue) -> str:
    """The Store epilogue for the options' epilogue; NoEmbedding where the tile family cannot
    give the ground truth's value."""
    name = getattr(epilogue, "name", epilogue.kind)
    if epilogue.kind not in EPILOGUES:
        raise NoEmbedding(f"the tile family's Store writes {', '.join(EPILOGUES)}; it has no "
                          f"{name} epilogue (docs/tile.md section 6)")
    out = cfg.dtype(cfg.operand_names[2])
    if epilogue.kind != "wrap" and out.bytes < 4:
        raise NoEmbedding(f"the output {cfg.operand_names[2]} is {out.name}: its sums wrap at "
                          f"{8 * out.bytes} bits, so only the wrap epilogue (the low 8 bits) is "
                          f"exact; {name} needs an int32 accumulator")
    return epilogue.kind


def needs_bias(cfg) -> bool:
    """An unsigned input holds int8 data as v + 128 and needs a correction per output tile."""
    return any(not cfg.dtype(q).signed for q in cfg.operand_names[:2])


def best_program(embedding: Embedding, options) -> tuple[Plan, Program]:
    """The planner's best few tilings, generated and ranked by the cycle model."""
    cfg = embedding.accelerator.config
    store = check_epilogue(cfg, options.epilogue)
    b = blocked(embedding)
    if b.instances > MAX_COMPUTES:
        raise BadInput(f"{embedding.operator.describe()} needs {b.instances} instructions of "
                       f"{cfg.macs} MACs, one 64-byte record each; embedcsp builds tile programs of "
                       f"up to {MAX_COMPUTES} instructions ({MAX_COMPUTES * 64 >> 20} MiB of program.bin)")
    bias = needs_bias(cfg)
    plans = candidate_plans(b, bias, store, max(1, options.plan_candidates))
    layout: Layout = make_layout(b, store, bias)
    best = None
    for plan in plans:
        records = generate(plan, layout)
        if best is not None and len(records) > RERANK_MAX_RECORDS:
            continue
        cycles = simulate_records(records, cfg).cycles
        if best is None or cycles < best[0]:
            best = (cycles, plan, records)
        if len(records) > RERANK_MAX_RECORDS:
            break
    _, plan, records = best
    maps = b.class_maps
    return plan, Program(cfg, records, layout, maps)
