"""The ACC read-after-write hazard of VTA's pipelined GEMM loop.

The GEMM core issues one micro-op per cycle (II=1) and the ACC BRAM needs two
cycles to write back, so a micro-op must not write an ACC element that either
of the two micro-ops issued just before it writes (runtime `VerifyDep`). HLS
switches the dependence check off to reach II=1, so on hardware a violation
silently loses updates. The loop nest is flattened, so the rule holds across
loop iterations, not only inside one micro-op kernel.
"""

from __future__ import annotations

import numpy as np

HAZARD_WINDOW = 2


def _positions(iter_out: int, iter_in: int) -> list[list[tuple[int, int]]]:
    """Runs of consecutive (y, x) iterations that show every kind of step.

    Index differences along the flattened nest depend only on which loop
    boundary a step crosses, never on where, so a few iterations near each
    boundary are enough to find every hazard exactly.
    """
    xs = sorted({*range(min(iter_in, 3)), *range(max(iter_in - 3, 0), iter_in)})
    ys = sorted({*range(min(iter_out, 2))})
    order = [(y, x) for y in ys for x in xs]
    runs, run = [], [order[0]]
    for prev, cur in zip(order, order[1:]):
        consecutive = cur == (prev[0], prev[1] + 1) or (
            prev[1] == iter_in - 1 and cur == (prev[0] + 1, 0))
        if consecutive:
            run.append(cur)
        else:
            runs.append(run)
            run = [cur]
    runs.append(run)
    return runs


def gemm_hazard(dst: np.ndarray, iter_out: int, iter_in: int, f_out: int, f_in: int) -> bool:
    """True if a micro-op writes an ACC element one of the previous two wrote."""
    dst = np.asarray(dst, np.int64)
    if dst.size == 0:
        return False
    for run in _positions(iter_out, iter_in):
        seq = np.concatenate([dst + y * f_out + x * f_in for y, x in run])
        for d in range(1, HAZARD_WINDOW + 1):
            if np.any(seq[d:] == seq[:-d]):
                return True
    return False
