#!/usr/bin/env python3
"""Every VTA lane shape through the real loader, then a few operators on each accepted one.

LOG_BATCH 0..3 x LOG_BLOCK_IN 0..10 x LOG_BLOCK_OUT 0..10 (484 configs). First the
loader alone on each with VTA's default buffer sizes unchanged. Then buffer
sizes follow one rule (tests/fuzzcases.py `sweep_config`): VTA's default depths
(UOP 2^13, INP 2^11, WGT 2^10, ACC 2^11 elements), each lowered until the buffer is
at most 4 MiB, never below 2 elements; int8 inputs and weights, int32 accumulators.

Each config is loaded with accelerator_from_dict, as an ISA file is. A refused
config is counted under its IsaError message (numbers blanked). An accepted one
compiles gemm 35x70x64, gemm 1x17x33, conv2d 1x3x9x9 K=16 3x3 pad 1 and conv2d
1x32x8x8 K=20 3x3 stride 2, each with the wrap and the requant (shift 8) epilogue
and each strategy (by default each strategy once per shape with the epilogues
alternating, so every shape sees both; --full for all four). Every compile must
verify bit-exactly (plus the independent checks) or end in a documented error.
Exit 1 if any compiled a wrong program or crashed.

    .venv/bin/python scripts/isa_sweep.py --jobs 2 --out isa_sweep.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzzcases import (
    BAD,
    OUTCOMES,
    Case,
    limit_memory,
    load_config,
    run_case,
    signature,
    sweep_config,
)

SHAPES = (
    ("gemm", {"M": 35, "N": 70, "K": 64}),
    ("gemm", {"M": 1, "N": 17, "K": 33}),
    ("conv2d", {"N": 1, "C": 3, "H": 9, "W": 9, "K": 16, "R": 3, "S": 3, "pad_h": 1, "pad_w": 1,
                "stride_h": 1, "stride_w": 1}),
    ("conv2d", {"N": 1, "C": 32, "H": 8, "W": 8, "K": 20, "R": 3, "S": 3, "pad_h": 0, "pad_w": 0,
                "stride_h": 2, "stride_w": 2}),
)
EPILOGUES = (("wrap", 0), ("requant", 8))


def _config(args):
    lanes, strategies, full, mem_gb = args
    limit_memory(mem_gb)
    from embedcsp.errors import IsaError

    cfg = sweep_config(*lanes)
    try:
        load_config(cfg, "sweep")
    except IsaError as exc:
        return lanes, cfg, str(exc).removeprefix("sweep: "), []
    results = []
    for n, (kind, params) in enumerate(SHAPES):
        if full:
            combos = [(e, s) for e in EPILOGUES for s in strategies]
        else:  # each strategy once per shape, the epilogues alternating
            combos = [(EPILOGUES[(n + j) % 2], s) for j, s in enumerate(strategies)]
        for epilogue, strategy in combos:
            case = Case(kind, params, cfg, epilogue, strategy)
            results.append((case, run_case(case)))
    return lanes, cfg, None, results


def loader_only(work) -> tuple[int, Counter]:
    """The same lane shapes with VTA's default buffer sizes left as they are
    (15/15/18/17 bytes, as a user might copy vta_config.json): loader verdicts only."""
    from embedcsp.errors import IsaError

    accepted, refused = 0, Counter()
    for (b, i, o), *_ in work:
        cfg = {**sweep_config(b, i, o), "LOG_UOP_BUFF_SIZE": 15, "LOG_INP_BUFF_SIZE": 15,
               "LOG_WGT_BUFF_SIZE": 18, "LOG_ACC_BUFF_SIZE": 17}
        try:
            load_config(cfg, "sweep")
            accepted += 1
        except IsaError as exc:
            refused[re.sub(r"\d+", "#", str(exc).removeprefix("sweep: "))] += 1
    return accepted, refused


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("isa_sweep.json"))
    ap.add_argument("--strategies", default="csp,reference")
    ap.add_argument("--full", action="store_true",
                    help="every epilogue with every strategy (default: each strategy once per shape, "
                         "epilogues alternating, so every shape sees both)")
    ap.add_argument("--batch", type=int, nargs="*", default=list(range(4)), help="LOG_BATCH values")
    ap.add_argument("--block-in", type=int, nargs="*", default=list(range(11)))
    ap.add_argument("--block-out", type=int, nargs="*", default=list(range(11)))
    ap.add_argument("--mem-gb", type=float, default=10.0,
                    help="address-space limit per worker: a blow-up is a MemoryError on the case, "
                         "not the kernel's OOM killer taking a worker (which hangs the pool)")
    args = ap.parse_args(argv)
    strategies = tuple(args.strategies.split(","))
    work = [((b, i, o), strategies, args.full, args.mem_gb) for b in args.batch for i in args.block_in for o in args.block_out]

    fixed_accepted, fixed_refused = loader_only(work)
    start = time.perf_counter()
    refused: Counter = Counter()
    refused_example: dict[str, dict] = {}
    accepted = []
    outcomes: Counter = Counter()
    failures = []
    done = 0
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(args.jobs, maxtasksperchild=20) as pool:
        for lanes, cfg, reason, results in pool.imap_unordered(_config, work):
            done += 1
            if reason is not None:
                key = re.sub(r"\d+", "#", reason)
                refused[key] += 1
                refused_example.setdefault(key, {"lanes": lanes, "reason": reason})
            else:
                accepted.append({"lanes": lanes, "config": cfg,
                                 "outcomes": dict(Counter(r.outcome for _, r in results))})
                for case, r in results:
                    outcomes[r.outcome] += 1
                    if r.outcome in BAD:
                        failures.append({"lanes": lanes, "signature": signature(r), "head": r.head(),
                                         "message": r.message, "trace": r.trace, "case": case.as_dict(),
                                         "describe": case.describe()})
            if done % 25 == 0 or done == len(work):
                partial = {"configs_done": done, "configs": len(work), "accepted": accepted,
                           "refused": dict(refused), "outcomes": dict(outcomes), "failures": failures}
                args.out.write_text(json.dumps(partial, indent=1) + "\n")
                print(f"  {done}/{len(work)} configs, {time.perf_counter() - start:.0f} s, accepted {len(accepted)}, "
                      + ", ".join(f"{k} {v}" for k, v in outcomes.items()), file=sys.stderr, flush=True)
    wall = time.perf_counter() - start

    print(f"ISA sweep: {len(work)} configs (LOG_BATCH x LOG_BLOCK_IN x LOG_BLOCK_OUT), wall {wall:.1f} s")
    print(f"  with VTA's default buffer sizes (15/15/18/17) unchanged, the loader accepts {fixed_accepted} "
          f"and refuses {sum(fixed_refused.values())}:")
    for key, n in fixed_refused.most_common():
        print(f"    refused {n:3d}x: {key}")
    print(f"  with the sweep's buffer rule: accepted {len(accepted)}, refused {sum(refused.values())}")
    for key, n in refused.most_common():
        ex = refused_example[key]
        print(f"    refused {n:3d}x: {ex['reason']}  (e.g. B/I/O = {ex['lanes']})")
    print(f"  compiles on accepted configs: {sum(outcomes.values())} ({len(SHAPES)} shapes x "
          + (f"{len(EPILOGUES)} epilogues x " if args.full else "")
          + f"{len(strategies)} strategies{'' if args.full else ', epilogues alternating'})")
    for name in OUTCOMES:
        print(f"    {name:14s} {outcomes.get(name, 0)}")
    groups: dict[str, list] = {}
    for f in failures:
        groups.setdefault(f["signature"], []).append(f)
    if groups:
        print(f"  {len(groups)} distinct failure(s):")
        for sig, fs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            configs = sorted({tuple(f["lanes"]) for f in fs})
            print(f"    [{len(fs)} compiles on {len(configs)} configs] {sig}")
            print(f"        e.g. {fs[0]['describe']}")
            print(f"        -> {fs[0]['head'][:200]}")
            print(f"        configs (B,I,O): {' '.join(''.join(map(str, c)) if max(c) < 10 else str(c) for c in configs[:40])}"
                  + (" ..." if len(configs) > 40 else ""))
    doc = {"configs": len(work), "wall_s": round(wall, 1), "accepted": accepted,
           "default_buffers": {"accepted": fixed_accepted, "refused": dict(fixed_refused)},
           "refused": [{"reason": refused_example[k]["reason"], "count": n, "example_lanes": refused_example[k]["lanes"]}
                       for k, n in refused.most_common()],
           "outcomes": {o: outcomes.get(o, 0) for o in OUTCOMES},
           "failures": failures}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"  details written to {args.out}")
    return 1 if any(outcomes.get(o) for o in BAD) else 0


if __name__ == "__main__":
    sys.exit(main())
