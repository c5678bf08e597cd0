#!/usr/bin/env python3
"""How long the functional model's check of a GEMM takes next to one float64 numpy matmul
of the same size (issue 11 item 4: at most 5x, for DeepBench's largest GEMM).

"The check" is what `embedcsp.run` and the bench do after compiling: encode the program,
execute the binary in the functional model (decoding, races, tokens, every instruction) and
compare every output with the ground truth computed from the operator's definition. The
matmul is A @ B on float64 copies of the same int8 inputs, made before timing. The two are
timed alternately in one process, so a machine shared with other work slows both alike;
the ratio is the median check over the median matmul.

    .venv/bin/python scripts/verify_speed.py                        # gemm-server-35, 3 rounds
    .venv/bin/python scripts/verify_speed.py --op gemm-server-2 --repeat 5

Exit 1 if a check fails or the ratio is above --limit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import embedcsp
from embedcsp.bench import deepbench_case
from embedcsp.reference import random_inputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", default="gemm-server-35", help="a DeepBench GEMM (default: 8448x6000x2816)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of (matmul, check)")
    parser.add_argument("--seed", type=int, default=0, help="input seed")
    parser.add_argument("--limit", type=float, default=5.0, help="largest acceptable ratio")
    args = parser.parse_args(argv)

    case = deepbench_case(args.op)
    op = case.operator
    if op.kind != "gemm":
        parser.error(f"{case.name} is a {op.kind}; the matmul comparison needs a GEMM")
    t0 = time.perf_counter()
    compiled = embedcsp.compile_operator(op, embedcsp.load_accelerator())
    print(f"{case.name}: {op.describe()}, {len(compiled.program.insns)} instructions, "
          f"compiled in {time.perf_counter() - t0:.1f} s", flush=True)
    inputs = random_inputs(op, args.seed)
    a, b = inputs["A"].astype(np.float64), inputs["B"].astype(np.float64)

    matmul_s, check_s = [], []
    for r in range(args.repeat):
        t0 = time.perf_counter()
        a @ b
        matmul_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = embedcsp.run(compiled, inputs)
        check_s.append(time.perf_counter() - t0)
        v = result.verification
        print(f"round {r + 1}: matmul {matmul_s[-1]:.2f} s, check {check_s[-1]:.2f} s "
              f"({v.checked} outputs, {'bit-exact' if v.ok else f'{v.mismatches} MISMATCHES'})", flush=True)
        if not v.ok:
            print(f"check failed: {v.first_mismatch}")
            return 1
    mm, check = statistics.median(matmul_s), statistics.median(check_s)
    ratio = check / mm
    print(f"median: float64 matmul {mm:.2f} s, model check {check:.2f} s, ratio {ratio:.2f} "
          f"(limit {args.limit:g})")
    return 0 if ratio <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
