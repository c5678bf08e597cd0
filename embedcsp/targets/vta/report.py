"""VTA's part of a solve report: plan, program, execution and DRAM traffic (text and JSON)."""

from __future__ import annotations

from embedcsp.report import human_bytes as _bytes


def program_lines(compiled, verification, timing) -> list[str]:
    """The lines between the embedding and the timing of `embedcsp solve`'s text output."""
    plan, program, counters = compiled.plan, compiled.program, verification.counters
    t = plan.tiling
    loads = counters.load_bytes
    return [
        f"plan       {f'{plan.n_bats} batches of ' if plan.n_bats > 1 else ''}"
        f"{plan.n_rows}x{plan.n_cols}x{plan.n_reds} elements in tiles of "
        f"{t.rows}x{t.cols}x{t.reds}, {t.outer}s outermost, "
        f"{'double' if t.inp_slots > 1 else 'single'}-buffered",
        f"program    {len(program.insns)} instructions ("
        + ", ".join(f"{k} {n}" for k, n in program.insn_counts().items())
        + f"), {program.uops.size} micro-ops in UOP",
        f"execution  {counters.gemm_uops} GEMM micro-ops, {counters.alu_uops} ALU micro-ops; "
        f"GEMM core busy {timing.gemm_cycles / timing.cycles:.1%} of the modelled cycles",
        f"DRAM       loaded {_bytes(sum(loads.values()))} (inp {_bytes(loads['INP'])}, "
        f"wgt {_bytes(loads['WGT'])}, uop {_bytes(loads['UOP'])}), stored {_bytes(counters.store_bytes)}",
    ]


def program_fields(compiled, verification) -> dict:
    """The same facts for `--json`."""
    plan, program, counters = compiled.plan, compiled.program, verification.counters
    return {
        "plan": {"tile": [plan.tiling.rows, plan.tiling.cols, plan.tiling.reds],
                 "outer": plan.tiling.outer, "estimated_cycles": plan.estimated_cycles},
        "instructions": program.insn_counts(),
        "insn_count": len(program.insns),
        "micro_ops_in_buffer": int(program.uops.size),
        "gemm_micro_ops": counters.gemm_uops,
        "dram_load_bytes": counters.load_bytes,
        "dram_store_bytes": counters.store_bytes,
    }


def bench_columns(compiled, verification) -> dict:
    """The bench CSV's execution columns: instruction instances, DRAM traffic, program size."""
    counters = verification.counters
    return {"gemm_uops": counters.gemm_uops, "dram_load_bytes": sum(counters.load_bytes.values()),
            "dram_store_bytes": counters.store_bytes, "instructions": len(compiled.program.insns)}
