#!/usr/bin/env python3
"""Where the placements beyond whole dims win (docs/placements.md), layer by layer.

For every distinct depthwise layer of MobileNetV2, the ResNeXt-50 32x4d grouped 3x3 layer
and BERT-base's two attention bmm (sequence 128), on one accelerator (default VTA): the
padding efficiency of the solver's best whole-dim embedding (what the CSP's lanes objective
reaches), the fastest whole-dim candidate, and the embedding the cycle model chose with its
placement, lanes, DRAM bytes loaded and cycles. Every chosen program is verified bit-exact.

    .venv/bin/python scripts/placements_table.py [--isa FILE] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embedcsp.accelerator import load_accelerator  # noqa: E402
from embedcsp.networks import layers  # noqa: E402
from embedcsp.ops.conv import conv2d_general  # noqa: E402
from embedcsp.pipeline import Options, solve_and_verify  # noqa: E402
from embedcsp.targets.registry import family  # noqa: E402

WHOLE = ("solver", "alternative", "reference")


def cases():
    for layer in layers("mobilenetv2"):
        p = layer.params
        if p.get("groups", 1) > 1:
            yield layer.name, layer.operator()
    yield "resnext50.conv2-grouped", conv2d_general(1, 128, 56, 56, 128, 3, 3, groups=32, pads=(1, 1, 1, 1))
    for layer in layers("bert-base"):
        if layer.op == "bmm":
            yield layer.name, layer.operator()


def row(name, op, acc, options):
    out = solve_and_verify(op, acc, options, seed=0)
    c = out.compiled
    solver = next(x for x in c.candidates if x.source == "solver")
    whole = min((x for x in c.candidates if x.source in WHOLE and x.cycles is not None), key=lambda x: x.cycles)
    loaded = family(acc.family).report.bench_columns(c, out.verification).get("dram_load_bytes")
    return {
        "layer": name, "operator": op.describe(),
        "whole_dim_padding": round(op.macs / solver.padded_macs, 4),
        "whole_dim_cycles": whole.cycles, "whole_dim_source": whole.source,
        "chosen_form": c.form, "chosen_padding": round(c.efficiency, 4), "chosen_cycles": out.timing.cycles,
        "chosen_loaded_bytes": loaded, "binding": dict(c.embedding.binding),
        "speedup_over_whole_dim": round(whole.cycles / out.timing.cycles, 3),
        "roofline_efficiency": round(out.roofline.efficiency(out.timing.cycles), 4),
        "verified": out.verification.ok,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", default=None, help="accelerator TOML (default: the shipped VTA)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    acc = load_accelerator(args.isa)
    options = Options(time_limit=20)
    rows = []
    print("| layer | whole-dim padding | whole-dim cycles | chosen | padding | cycles | x | roofline | verified |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, op in cases():
        r = row(name, op, acc, options)
        rows.append(r)
        print(f"| {name} | {r['whole_dim_padding']} | {r['whole_dim_cycles']} | {r['chosen_form']} | "
              f"{r['chosen_padding']} | {r['chosen_cycles']} | {r['speedup_over_whole_dim']} | "
              f"{r['roofline_efficiency']} | {r['verified']} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["verified"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
