"""The TEMPLATE family's lines of `embedcsp solve`'s report, and the same facts for --json."""

from __future__ import annotations

from embedcsp.report import human_bytes


def program_lines(compiled, verification, timing) -> list[str]:
    plan, program, c = compiled.plan, compiled.program, verification.counters
    counts = "x".join(str(n) for n in plan.counts)
    return [
        f"plan       {counts} instances (bat/row/col/red), reduction innermost",
        f"program    {len(program)} records (1 config, {c.mmas} mma, {c.writebacks} with writeback), "
        f"{human_bytes(program.records.nbytes)} program.bin",
        f"execution  {c.mmas} instructions of {program.config.pattern.macs} MACs; compute "
        f"{timing.compute_cycles}, memory {timing.memory_cycles}, issue {timing.issue_cycles} cycles",
        f"DRAM       loaded {human_bytes(c.load_bytes)}, stored {human_bytes(c.store_bytes)} "
        f"(image {human_bytes(program.dram_size)})",
    ]


def program_fields(compiled, verification) -> dict:
    c = verification.counters
    return {"plan": compiled.plan.as_dict(), "insn_count": len(compiled.program),
            "instructions": {"config": 1, "mma": c.mmas, "writeback": c.writebacks},
            "macs_issued": c.macs, "dram_load_bytes": c.load_bytes, "dram_store_bytes": c.store_bytes}


def bench_columns(compiled, verification) -> dict:
    """The bench CSV's execution columns: MMA records executed, DRAM traffic, program records."""
    c = verification.counters
    return {"gemm_uops": c.mmas, "dram_load_bytes": c.load_bytes, "dram_store_bytes": c.store_bytes,
            "instructions": len(compiled.program)}
