#!/usr/bin/env python3
"""Random compile campaign: shapes x VTA configs x epilogues x strategies.

Every case must verify bit-exactly (plus the independent checks of
tests/fuzzcases.py) or end in a documented error (bad input, no embedding,
solver timeout) with a message. Prints the count per outcome and the wall
time, writes every failing case with what replays it to a JSON file, and
exits 1 if any case compiled a wrong program or raised another exception.
A case past --wall seconds is counted as TOO SLOW: listed, but no exit 1.

    .venv/bin/python scripts/fuzz_campaign.py --cases 2000 --seed 0 --jobs 2
    .venv/bin/python scripts/fuzz_campaign.py --replay fuzz_failures.json

Case i of seed S is drawn from random.Random(f"{S}:{i}"), so `--only I` redoes one.
Distinct failures (same exception site or same message with the numbers blanked)
are shrunk greedily to a small reproducer unless --no-shrink.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzzcases import (
    BAD,
    OUTCOMES,
    Case,
    draw_case,
    limit_memory,
    run_case,
    shrink,
    signature,
)


def case_of(seed: int, index: int) -> Case:
    return draw_case(random.Random(f"{seed}:{index}").randint)


SLOW = "TOO SLOW"  # past --wall: reported, but not a wrong program or a crash


class WallLimit(Exception):
    pass


def _alarm(signum, frame):
    raise WallLimit("the case ran past the campaign's per-case wall limit")


def _work(args):
    index, case, wall, mem_gb = args
    limit_memory(mem_gb)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(wall)
    try:
        result = run_case(case)
    finally:
        signal.alarm(0)
    if result.message.startswith("WallLimit"):
        result.outcome = SLOW
    return index, case, result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("fuzz_failures.json"))
    ap.add_argument("--wall", type=int, default=300, help="per-case wall limit in seconds")
    ap.add_argument("--only", type=int, nargs="*", help="just these case indices")
    ap.add_argument("--replay", type=Path, help="re-run the failures of an earlier JSON file")
    ap.add_argument("--no-shrink", action="store_true")
    ap.add_argument("--shrink-budget", type=float, default=20.0, help="seconds per distinct failure")
    ap.add_argument("--mem-gb", type=float, default=10.0,
                    help="address-space limit per worker: a blow-up is a MemoryError on the case, "
                         "not the kernel's OOM killer taking a worker (which hangs the pool)")
    args = ap.parse_args(argv)

    if args.replay:
        doc = json.loads(args.replay.read_text())
        work = [(f["index"], Case.from_dict(f["case"]), args.wall, args.mem_gb) for f in doc["failures"]]
    else:
        indices = args.only if args.only else range(args.cases)
        work = [(i, case_of(args.seed, i), args.wall, args.mem_gb) for i in indices]

    print(f"{len(work)} cases, {args.jobs} jobs", file=sys.stderr, flush=True)
    start = time.perf_counter()
    counts: Counter = Counter()
    by_group: Counter = Counter()
    failures = []
    slowest = []
    done = 0
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(args.jobs, maxtasksperchild=200) as pool:
        for index, case, result in pool.imap_unordered(_work, work, chunksize=2):
            done += 1
            counts[result.outcome] += 1
            by_group[(case.kind, case.strategy, result.outcome)] += 1
            slowest.append({"index": index, "seconds": round(result.seconds, 2), "outcome": result.outcome,
                            "describe": case.describe()})
            if result.outcome in BAD + (SLOW,):
                failures.append({"index": index, "outcome": result.outcome, "signature": signature(result),
                                 "message": result.message, "head": result.head(),
                                 "trace": result.trace, "case": case.as_dict(), "describe": case.describe()})
            if done % 100 == 0 or done == len(work):
                print(f"  {done}/{len(work)} cases, {time.perf_counter() - start:.0f} s, "
                      + ", ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    print(f"  done in {wall:.0f} s; shrinking the distinct failures", file=sys.stderr, flush=True)

    failures.sort(key=lambda f: f["index"])
    slowest.sort(key=lambda s: -s["seconds"])
    distinct: dict[str, dict] = {}
    for f in failures:
        d = distinct.setdefault(f["signature"], {"signature": f["signature"], "count": 0,
                                                 "first_index": f["index"], "example": f})
        d["count"] += 1
    doc = {"seed": args.seed, "cases": len(work), "jobs": args.jobs, "wall_s": round(wall, 1),
           "counts": {o: counts.get(o, 0) for o in OUTCOMES + (SLOW,)},
           "distinct": list(distinct.values()), "failures": failures, "slowest": slowest[:20]}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    if not args.no_shrink:
        for d in distinct.values():
            if d["example"]["outcome"] == SLOW:
                continue  # too slow to shrink by re-running
            small = shrink(Case.from_dict(d["example"]["case"]), d["signature"], args.shrink_budget)
            r = run_case(small)
            d["reproducer"] = {"case": small.as_dict(), "describe": small.describe(), "head": r.head(),
                               "python": small.repro()}
        args.out.write_text(json.dumps(doc, indent=1) + "\n")

    print(f"fuzz campaign: {len(work)} cases, seed {args.seed}, {args.jobs} jobs, wall {wall:.1f} s "
          f"(slowest case {slowest[0]['seconds'] if slowest else 0} s)")
    for name in OUTCOMES + (SLOW,):
        print(f"  {name:14s} {counts.get(name, 0)}")
    print("  by kind / strategy:")
    for kind in ("gemm", "conv2d"):
        for strategy in ("csp", "reference"):
            row = {o: by_group.get((kind, strategy, o), 0) for o in OUTCOMES + (SLOW,)}
            print(f"    {kind:6s} {strategy:9s} " + " ".join(f"{o}={n}" for o, n in row.items() if n))
    if distinct:
        print(f"  {len(distinct)} distinct failure(s):")
        for d in sorted(distinct.values(), key=lambda d: -d["count"]):
            print(f"    [{d['count']}x] {d['signature']}")
            rep = d.get("reproducer") or {"describe": d["example"]["describe"], "head": d["example"]["head"]}
            print(f"        e.g. {rep['describe']}")
            print(f"        -> {rep['head'][:200]}")
    print(f"  failures written to {args.out}")
    return 1 if any(counts.get(o) for o in BAD) else 0


if __name__ == "__main__":
    sys.exit(main())
