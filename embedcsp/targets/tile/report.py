"""The tile family's part of a solve report: plan, program, execution and DRAM traffic, and
the Timing the core prints (docs/tile.md section 10)."""

from __future__ import annotations

from dataclasses import dataclass

from embedcsp.report import human_bytes as _bytes

BOARD = "generic"
CLOCK_HZ = 1e9  # nominal: a tile description has no clock; seconds are cycles at 1 GHz


@dataclass(frozen=True)
class TileTiming:
    """timing.Timing with the protocol's board and seconds (at the nominal clock)."""

    cycles: int
    busy: tuple[int, int, int]  # load, compute, store queues
    compute_cycles: int
    board: str = BOARD

    @property
    def seconds(self) -> float:
        return self.cycles / CLOCK_HZ

    def as_dict(self) -> dict:
        return {"cycles": self.cycles, "seconds": self.seconds, "board": self.board,
                "clock_mhz": CLOCK_HZ / 1e6, "busy": dict(zip(("load", "compute", "store"), self.busy)),
                "compute_cycles": self.compute_cycles,
                "compute_utilization": round(self.compute_cycles / self.cycles, 6) if self.cycles else 0.0}


def plan_text(plan) -> str:
    b, t = plan.blocked, plan.tiling
    block = " x ".join(f"{c} {t.size(c)}" for c in b.classes)
    counts = "x".join(str(b.count(c)) for c in b.classes)
    cfg = b.cfg
    rings = ", ".join(f"{q} {plan.depth(q)}" for q in cfg.operand_names)
    return (f"{counts} instances ({'/'.join(b.classes)}) in blocks of {block} tiles, "
            f"{' > '.join(t.order)} loops; blocks per ring: {rings}"
            + ("; uint8 input: correction tiles" if plan.bias else ""))


def program_lines(compiled, verification, timing) -> list[str]:
    """The lines between the embedding and the timing of `embedcsp solve`'s text output."""
    plan, program, counters = compiled.plan, compiled.program, verification.counters
    n = program.insn_counts()
    cfg = program.config
    return [
        f"plan       {plan_text(plan)}",
        f"program    {len(program)} records ({', '.join(f'{k} {v}' for k, v in n.items())}), "
        f"{_bytes(64 * len(program))} program.bin",
        f"execution  {counters.insns['compute']} instructions of {cfg.macs} MACs; compute busy "
        f"{timing.compute_cycles / timing.cycles:.1%} of the modelled cycles",
        f"DRAM       loaded {_bytes(counters.load_bytes)}, stored {_bytes(counters.store_bytes)} "
        f"(image {_bytes(program.dram_size)})",
    ]


def program_fields(compiled, verification) -> dict:
    """The same facts for --json."""
    plan, program, counters = compiled.plan, compiled.program, verification.counters
    t = plan.tiling
    return {
        "plan": {"block": dict(t.block), "order": list(t.order), "instances": dict(plan.blocked.counts),
                 "estimated_cycles": plan.estimated_cycles, "correction": plan.bias,
                 "blocks_per_ring": {q: plan.depth(q) for q in program.config.operand_names}},
        "instructions": program.insn_counts(),
        "insn_count": len(program),
        "macs_issued": counters.macs,
        "dram_load_bytes": counters.load_bytes,
        "dram_store_bytes": counters.store_bytes,
    }


def bench_columns(compiled, verification) -> dict:
    """The bench CSV's execution columns: Computes executed, DRAM traffic, program records."""
    c = verification.counters
    return {"gemm_uops": c.insns["compute"], "dram_load_bytes": c.load_bytes,
            "dram_store_bytes": c.store_bytes, "instructions": len(compiled.program)}
