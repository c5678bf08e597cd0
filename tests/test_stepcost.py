"""The step-level cycle model (targets/vta/stepcost.py) against the instruction-level one:
for every candidate plan of a range of embeddings, `plan_cycles(plan)` must equal
`simulate(generate(plan))` exactly, since the planner ranks by the first and reports the second."""

from __future__ import annotations

from dataclasses import replace

import pytest

from embedcsp.accelerator import load_accelerator
from embedcsp.csp import Pins, solve_embedding
from embedcsp.operator import conv2d, gemm
from embedcsp.ops import bmm, conv2d_general
from embedcsp.pipeline import Options, compile_operator
from embedcsp.reference import Epilogue
from embedcsp.targets.registry import family
from embedcsp.targets.vta.build import ranked_plans
from embedcsp.targets.vta.codegen import UopOverflow, generate
from embedcsp.targets.vta.direct import direct_plans
from embedcsp.targets.vta.plan import candidate_plans
from embedcsp.targets.vta.stepcost import plan_cycles
from embedcsp.targets.vta.timing import board, simulate

VTA = load_accelerator()
VARIANTS = {"vta": VTA, "acc_deep": load_accelerator("isa/vta_acc_deep.toml"),
            "b2": load_accelerator("isa/vta_b2_i8_o32.toml")}

CASES = [
    ("vta", gemm(35, 70, 64), "csp"),
    ("vta", gemm(200, 48, 1000), "csp"),
    ("vta", gemm(35, 700, 2048), "reference"),
    ("vta", conv2d(1, 3, 30, 30, 32, 3, 3, 1, 1, 1, 1), "csp"),
    ("vta", conv2d(1, 32, 14, 14, 48, 3, 3, 1, 1, 1, 1), "reference"),  # direct form
    ("vta", conv2d(2, 16, 9, 40, 16, 3, 3, 1, 1, 2, 1), "reference"),  # direct, column tiles
    ("vta", conv2d_general(1, 32, 8, 8, 32, 3, 3, groups=4, pads=(1, 1, 1, 1)), "reference"),  # batch loop
    ("vta", bmm(3, 20, 37, 24), "csp"),
    ("acc_deep", gemm(64, 128, 256), "csp"),
    ("b2", conv2d(4, 16, 7, 7, 16, 3, 3, 1, 1, 1, 1), "reference"),
]


def _plans(emb, double_buffer):
    b = board("pynq")
    if emb.form == "direct":
        return direct_plans(emb, double_buffer, b.bus_bytes)[:6]
    return candidate_plans(emb, double_buffer, b.bus_bytes, 6)


@pytest.mark.parametrize("double_buffer", [True, False])
@pytest.mark.parametrize("epilogue", [Epilogue("wrap"), Epilogue("requant", shift=5, rounding="floor")],
                         ids=["wrap", "requant"])
@pytest.mark.parametrize("variant,op,strategy", CASES, ids=lambda x: getattr(x, "describe", lambda: str(x))())
def test_step_model_equals_the_instruction_model(variant, op, strategy, epilogue, double_buffer):
    acc = VARIANTS[variant]
    pins = family("vta").reference_pins(op) if strategy == "reference" else Pins()
    emb, _ = solve_embedding(op, acc, 10.0, 0, pins)
    b = board("pynq")
    checked = 0
    for plan in _plans(emb, double_buffer):
        try:
            program = generate(plan, epilogue)
        except UopOverflow:
            with pytest.raises(UopOverflow):
                plan_cycles(plan, epilogue, b)
            continue
        assert plan_cycles(plan, epilogue, b) == simulate(list(program.insns), program.config, b).cycles
        checked += 1
    assert checked > 0


def test_the_build_takes_the_plan_the_model_ranks_first_at_every_size():
    """No size falls back to the estimate: the largest plans are costed and ranked too."""
    op = gemm(1024, 1024, 2048)  # 4096+ tile steps, beyond the old re-ranking limit
    options = Options(board="pynq", epilogue=Epilogue("wrap"))
    compiled = compile_operator(op, VTA, options)
    ranked = ranked_plans(compiled.embedding, replace(compiled.options))
    assert ranked[0][1] == compiled.plan and [c for c, _ in ranked] == sorted(c for c, _ in ranked)
    cost = family("vta").cost(compiled)
    assert cost.cycles == ranked[0][0]
