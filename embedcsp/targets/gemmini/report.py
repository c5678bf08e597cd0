"""Gemmini's part of a solve report: plan, program, execution and DRAM traffic (text and JSON)."""

from __future__ import annotations

from embedcsp.report import human_bytes as _bytes


def program_lines(compiled, verification, timing) -> list[str]:
    """The lines between the embedding and the timing of `embedcsp solve`'s text output."""
    plan, program, counters = compiled.plan, compiled.program, verification.counters
    computes = counters.commands["compute_preloaded"] + counters.commands["compute_accumulated"]
    return [
        f"plan       {plan.describe()}",
        f"program    {len(program)} commands ("
        + ", ".join(f"{k} {n}" for k, n in program.counts.items()) + ")",
        f"execution  {computes} computes, {counters.macs} MACs issued; array busy "
        f"{timing.compute_cycles / timing.cycles:.1%} of the modelled cycles",
        f"DRAM       loaded {_bytes(counters.load_bytes)}, stored {_bytes(counters.store_bytes)} "
        f"(dram.bin at {program.dram_base:#x})",
    ]


def program_fields(compiled, verification) -> dict:
    """The same facts for `--json`."""
    plan, program, counters = compiled.plan, compiled.program, verification.counters
    t = plan.tiling
    return {
        "plan": {"dataflow": t.dataflow, "tile": [t.rows, t.cols, t.reds], "outer": t.outer,
                 "slots": t.slots, "os_chain": t.chain, "chunks": [plan.rows.n, plan.cols.n, plan.reds.n],
                 "estimated_cycles": plan.estimated_cycles},
        "commands": program.counts,
        "command_count": len(program),
        "macs_issued": counters.macs,
        "dram_load_bytes": counters.load_bytes,
        "dram_store_bytes": counters.store_bytes,
    }


def bench_columns(compiled, verification) -> dict:
    """The bench CSV's execution columns."""
    c = verification.counters
    return {"gemm_uops": c.commands["compute_preloaded"] + c.commands["compute_accumulated"],
            "dram_load_bytes": c.load_bytes, "dram_store_bytes": c.store_bytes,
            "instructions": len(compiled.program)}
