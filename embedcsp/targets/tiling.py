"""What every family's planner shares: the tile extents worth trying along one axis."""

from __future__ import annotations


def candidate_extents(n: int, cap: int) -> list[int]:
    """Tile extents worth trying along an axis of n elements: powers of two and the even splits
    of n into 1..8 parts, none above `cap` (what the buffers hold) or n; [] if cap < 1."""
    cap = min(cap, n)
    if cap < 1:
        return []
    out = {cap}
    p = 1
    while p <= cap:
        out.add(p)
        p *= 2
    for parts in range(1, 9):
        t = -(-n // parts)
        if t <= cap:
            out.add(t)
    return sorted(out)
