#!/usr/bin/env python3
"""Compile every DeepBench inference operator, verify each bit-exact, write one CSV row each.

    python scripts/deepbench_sweep.py --suite gemm --jobs 2 --out bench/deepbench_gemm.csv

Columns: name, shape, solver status, solve seconds, padding efficiency, GEMM
micro-ops, DRAM bytes moved by the program, instructions, host-side transform
bytes and duplication, modelled cycles on pynq with the roofline bound and
efficiency, verified. A summary (medians, slowest) goes to stderr
and to a JSON file beside the CSV. Duplicate conv rows are solved once.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from embedcsp import deepbench
from embedcsp.accelerator import load_accelerator
from embedcsp.cli import deepbench_operator
from embedcsp.errors import EmbedcspError
from embedcsp.pipeline import Options
from embedcsp.report import solve_and_verify

COLUMNS = [
    "name", "kind", "M", "N", "K", "C", "H", "W", "R", "S", "pad", "stride",
    "status", "objective", "bound", "solve_s", "padding_efficiency", "embedding", "gemm_uops",
    "dram_load_bytes", "dram_store_bytes", "instructions", "host_packed_bytes", "duplication",
    "cycles", "roofline_cycles", "roofline_efficiency", "verified", "verify_s", "error",
]


def evaluate(name: str, isa: str | None, time_limit: float, seed: int) -> dict:
    """One CSV row; errors become a row too, so one failure never hides the rest."""
    p = deepbench.lookup(name)
    row: dict = {"name": name}
    if isinstance(p, deepbench.GemmProblem):
        row.update(kind="gemm", M=p.m, N=p.n, K=p.k)
    else:
        row.update(kind="conv2d", N=p.n, C=p.c, H=p.h, W=p.w, K=p.k, R=p.r, S=p.s,
                   pad=f"{p.pad_h}x{p.pad_w}", stride=f"{p.stride_h}x{p.stride_w}")
    try:
        o = solve_and_verify(deepbench_operator(name), load_accelerator(isa),
                             Options(time_limit=time_limit, seed=seed), seed)
    except EmbedcspError as exc:
        row.update(verified=False, error=str(exc))
        return row
    c, v = o.compiled, o.verification
    lanes = "; ".join(f"{g.role}<-{'x'.join(g.dims) or '-'}" for g in c.embedding.groups)
    row.update(
        status=c.report.status, objective=c.report.objective, bound=c.report.bound,
        solve_s=round(c.report.seconds, 4), padding_efficiency=round(c.embedding.efficiency, 6),
        embedding=lanes, gemm_uops=v.counters.gemm_uops,
        dram_load_bytes=sum(v.counters.load_bytes.values()), dram_store_bytes=v.counters.store_bytes,
        instructions=len(c.program.insns),
        host_packed_bytes=sum(t.packed_bytes for t in o.transforms),
        duplication=round(max(t.duplication for t in o.transforms), 4),
        cycles=o.timing.cycles, roofline_cycles=o.roofline.cycles,
        roofline_efficiency=round(o.roofline.efficiency(o.timing.cycles), 4),
        verified=v.ok, verify_s=round(v.seconds, 3), error=v.first_mismatch or "",
    )
    return row


def names_for(suite: str) -> list[str]:
    problems = []
    if suite in ("gemm", "all"):
        problems += deepbench.gemm_problems()
    if suite in ("conv", "all"):
        problems += [p for p in deepbench.conv_problems() if p.dup_of is None]
    return [p.name for p in problems]


def summarize(rows: list[dict], wall: float) -> dict:
    ok = [r for r in rows if r.get("verified") is True]
    solve = [r["solve_s"] for r in ok]
    slowest = max(ok, key=lambda r: r["solve_s"]) if ok else None
    slowest_verify = max(ok, key=lambda r: r["verify_s"]) if ok else None
    return {
        "operators": len(rows), "verified": len(ok),
        "failed": [r["name"] for r in rows if r.get("verified") is not True],
        "optimal": sum(r.get("status") == "OPTIMAL" for r in ok),
        "median_solve_s": statistics.median(solve) if solve else None,
        "max_solve_s": slowest["solve_s"] if slowest else None,
        "slowest_solve": slowest["name"] if slowest else None,
        "median_verify_s": statistics.median(r["verify_s"] for r in ok) if ok else None,
        "slowest_verify": slowest_verify["name"] if slowest_verify else None,
        "max_verify_s": slowest_verify["verify_s"] if slowest_verify else None,
        "median_padding_efficiency": statistics.median(r["padding_efficiency"] for r in ok) if ok else None,
        "min_padding_efficiency": min((r["padding_efficiency"] for r in ok), default=None),
        "geomean_roofline_efficiency": (
            statistics.geometric_mean(r["roofline_efficiency"] for r in ok) if ok else None),
        "wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=("gemm", "conv", "all"), default="gemm")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2, the machine's cores)")
    ap.add_argument("--out", type=Path, default=None, help="CSV path (default bench/deepbench_<suite>.csv)")
    ap.add_argument("--isa", default=None, help="accelerator TOML (default: the shipped VTA)")
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="just these operator names")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or Path("bench") / f"deepbench_{args.suite}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    names = args.only or names_for(args.suite)
    start = time.perf_counter()
    rows: dict[str, dict] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as bar, ProcessPoolExecutor(max_workers=args.jobs) as pool:
        task = bar.add_task(f"DeepBench {args.suite}", total=len(names))
        futures = {pool.submit(evaluate, n, args.isa, args.time_limit, args.seed): n for n in names}
        for fut in as_completed(futures):
            row = fut.result()
            rows[row["name"]] = row
            if row.get("verified") is not True:
                logging.warning("%s: NOT verified: %s", row["name"], row.get("error"))
            bar.advance(task)
    ordered = [rows[n] for n in names]
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in ordered:
            writer.writerow({k: row.get(k, "") for k in COLUMNS})
    summary = summarize(ordered, time.perf_counter() - start)
    out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logging.info("wrote %s", out)
    logging.info(json.dumps(summary, indent=2))
    return 0 if not summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
