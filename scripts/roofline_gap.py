#!/usr/bin/env python3
"""Where the gap to the roofline is, operator by operator, on a VTA bench file.

The roofline (docs/roofline.md) counts every useful MAC at the peak rate and every byte the
operator really moves at the bus width. A VTA program must also initialize the accumulator
of every output it computes, and every way to do it occupies the compute module, which
also runs the GEMMs (docs/vta.md: LOAD to ACC runs on the compute module):

    a GEMM micro-op with the reset bit: one cycle per ACC element;
    a LOAD into ACC (int32, or ACC_8BIT sign-extending int8): its bytes at the bus width,
    at least one cycle per element.

So no program beats  max(read, write, compute + V), V = outputs / (BATCH x BLOCK_OUT): the
fewest ACC elements that can hold them. That bound assumes nothing about the ACC's content
before the program runs. This script prints each operator's efficiency against both bounds
and the geomeans, from the bench CSV and each operator's own footprint.

    .venv/bin/python scripts/roofline_gap.py [bench/deepbench_all.csv] [--isa FILE] [--board pynq]
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embedcsp import deepbench, networks  # noqa: E402
from embedcsp.accelerator import load_accelerator  # noqa: E402
from embedcsp.footprint import footprint  # noqa: E402
from embedcsp.targets.vta.timing import board  # noqa: E402


def operator(name: str):
    if networks.is_network_name(name):
        return networks.lookup(name).operator()
    return deepbench.lookup(name).operator()


def bounds(op, cfg, bus: int) -> tuple[int, float]:
    """(roofline, roofline with accumulator initialization) in cycles; int8 inputs and outputs."""
    fp = footprint(op)
    compute = -(-op.macs // (cfg.batch * cfg.block_in * cfg.block_out))
    read = -(-sum(fp.of(t.name) for t in op.inputs) // bus)
    write = -(-fp.written // bus)
    roof = max(compute, read, write)
    acc_elems = -(-op.output.size // (cfg.batch * cfg.block_out))
    return roof, max(roof, compute + acc_elems)


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="?", default="bench/deepbench_all.csv")
    ap.add_argument("--isa", default=None, help="the VTA file the bench ran on (default: the shipped one)")
    ap.add_argument("--board", default="pynq")
    ap.add_argument("--below", type=float, default=0.9, help="list the operators below this efficiency")
    args = ap.parse_args()
    cfg, bus = load_accelerator(args.isa).config, board(args.board).bus_bytes
    plain, init, listed, reachable, achieved, ceiling = [], [], [], [], [], []
    for row in csv.DictReader(open(args.csv)):
        if not row["cycles"]:
            continue
        cycles = int(row["cycles"])
        roof, with_init = bounds(operator(row["name"]), cfg, bus)
        if roof != int(row["roofline_cycles"]):
            raise SystemExit(f"{row['name']}: roofline {roof} here, {row['roofline_cycles']} in the bench file "
                             "(another ISA or board?)")
        plain.append(roof / cycles)
        init.append(with_init / cycles)
        ceiling.append(roof / with_init)  # the roofline efficiency of a program at the second bound
        if row.get("ref_cycles") and float(row["ref_padding_efficiency"]) < 0.5:
            # The low-utilization subset: the most any VTA program could gain over the reference.
            reachable.append(int(row["ref_cycles"]) / with_init)
            achieved.append(int(row["ref_cycles"]) / cycles)
        if roof / cycles < args.below:
            listed.append((row["name"], row["padding_efficiency"], roof / cycles, with_init / cycles))
    print(f"{len(plain)} operators: roofline efficiency geomean {geomean(plain):.4f} (min {min(plain):.3f}, "
          f"{sum(e < 0.85 for e in plain)} below 0.85); against the roofline with accumulator "
          f"initialization geomean {geomean(init):.4f} (min {min(init):.3f}, {sum(e < 0.85 for e in init)} "
          "below 0.85)")
    print(f"the most any VTA program could reach against the roofline: geomean {geomean(ceiling):.4f} "
          f"(min {min(ceiling):.3f}, {sum(c < 0.85 for c in ceiling)} below 0.85)")
    if reachable:
        print(f"{len(reachable)} operators where the reference keeps under half its MACs useful: speedup "
              f"geomean x{geomean(achieved):.3f}; a program at the bound with accumulator initialization "
              f"would reach x{geomean(reachable):.3f}")
    print(f"\n| operator | padding | roofline eff. | with ACC init |\n|---|---|---|---|")
    for name, pad, a, b in sorted(listed, key=lambda r: r[2]):
        print(f"| {name} | {float(pad):.3f} | {a:.3f} | {b:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
