"""Reports of a solved and verified operator (`embedcsp.pipeline.Outcome`): the text the CLI
prints, the `--json` document and the provenance every manifest carries. Formatting only: the
stages that produce an Outcome are pipeline.py's."""

from __future__ import annotations

from collections import Counter

from embedcsp.__about__ import __version__
from embedcsp.pipeline import Compiled, Outcome
from embedcsp.targets.registry import family


def provenance(compiled: Compiled, seed: int) -> dict:
    """What produced a result, enough to tell two results apart and to redo one.

    Written into every manifest.json and `--json` document (docs/bundle-format.md).
    """
    acc, options = compiled.accelerator, compiled.options
    return {
        "embedcsp_version": __version__,
        "strategy": options.strategy,
        "solver_seed": options.seed,
        "input_seed": seed,
        "time_limit": options.time_limit,
        "epilogue": options.epilogue.manifest(),
        "board": options.board,
        "solver_status": compiled.report.status,
        "accelerator": {"name": acc.name, "family": acc.family, "sha256": acc.digest,
                        "description": acc.description()},
    }


def outcome_dict(o: Outcome) -> dict:
    c = o.compiled
    return {
        "provenance": provenance(c, o.seed),
        "operator": {"kind": c.operator.kind, **c.operator.param_dict},
        "accelerator": c.accelerator.name,
        "solver": c.report.as_dict(),
        "candidates": [cand.as_dict() for cand in c.candidates],
        "embedding": c.embedding_summary(),
        "embedding_text": c.embedding.describe(),
        "padding_efficiency": c.efficiency,
        "useful_macs": c.operator.macs,
        "issued_macs": c.embedding.padded_macs,
        **family(c.accelerator.family).report.program_fields(c, o.verification),
        "host_transform": [t.as_dict() for t in o.transforms],
        "timing": o.timing.as_dict(),
        "roofline": {"cycles": o.roofline.cycles, "compute_cycles": o.roofline.compute_cycles,
                     "memory_cycles": o.roofline.memory_cycles,
                     "efficiency": round(o.roofline.efficiency(o.timing.cycles), 6)},
        "verification": o.verification.as_dict(),
        "seconds": {k: round(v, 4) for k, v in c.seconds.items()},
    }


def choice_lines(c: Compiled) -> list[str]:
    """How the cycle model chose among the candidate embeddings (strategy csp)."""
    if len(c.candidates) < 2:
        return []
    chosen = c.embedding.brief()
    kinds = ", ".join(f"{n} {name}" for name, n in Counter(cand.source for cand in c.candidates).items())
    lines = [f"chosen     by the cycle model among {len(c.candidates)} embeddings ({kinds}; docs/choice.md)"]
    for cand in c.candidates:
        mark = "*" if cand.embedding == chosen else " "
        cost = f"{cand.cycles} cycles" if cand.cycles is not None else f"no program ({cand.note})"
        lines.append(f"  {mark} {cand.source:11s} {cost:>16s}, {cand.padded_macs} MACs: {cand.embedding}")
    return lines


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as the reports print them)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def outcome_text(o: Outcome) -> list[str]:
    c = o.compiled
    r, v = c.report, o.verification
    fam = family(c.accelerator.family)
    strategy = ("csp (the solver's embedding and layout)" if c.options.strategy == "csp"
                else f"reference ({fam.reference})")
    lines = [
        f"{c.operator.describe()} on {c.accelerator.name} ({c.accelerator.config.tag()}, "
        f"sha256 {c.accelerator.digest[:12]})",
        f"strategy   {strategy}",
        f"solver     {r.status} in {r.seconds:.3f} s: issued MACs {r.objective}, bound {r.bound}",
        *choice_lines(c),
        *([f"placement  {c.placement.note}", f"  statement {c.placement.operator.statement()}"]
          if c.placement else []),
        "embedding",
        *(f"  {line}" for line in c.embedding.describe()),
        f"padding    efficiency {c.efficiency:.4f} "
        f"(useful {c.operator.macs} / issued {c.embedding.padded_macs} MACs)",
        *fam.report.program_lines(c, v, o.timing),
        "host       " + "; ".join(
            f"{h.tensor}: {human_bytes(h.logical_bytes)} -> {human_bytes(h.packed_bytes)} packed"
            + (f", duplication x{h.duplication:.2f}" if h.duplication > 1.0001 else "")
            for h in o.transforms),
    ]
    tm, rf = o.timing, o.roofline
    lines.append(f"timing     {tm.cycles} cycles on {tm.board} ({tm.seconds * 1e3:.3f} ms); roofline "
                 f"{rf.cycles} cycles ({'compute' if rf.compute_cycles >= rf.memory_cycles else 'memory'}"
                 f"-bound), efficiency {rf.efficiency(tm.cycles):.3f}")
    if v.ok:
        lines.append(f"verified   {v.checked} outputs bit-exact against numpy "
                     f"(functional model, seed {o.seed}, {v.seconds:.2f} s)")
    else:
        lines.append(f"FAILED     {v.mismatches} of {v.checked} outputs differ; first: {v.first_mismatch}")
    return lines
