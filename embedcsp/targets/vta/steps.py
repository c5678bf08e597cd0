"""Tile steps and micro-op kernels: the sequencing that every layout form shares.

A plan's tile steps run in its loop order with the red tile innermost, so
partial sums stay in ACC. Each scratchpad is a ring of slots; a step that reads
a tile not in its slot loads it, and that load must wait until the last step
that read the slot's previous tile is done (a g2l token in codegen).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from embedcsp.targets.vta.plan import Plan


class Kernels:
    """Micro-op kernels, each placed once in the UOP buffer."""

    def __init__(self) -> None:
        self.where: dict[tuple, tuple[int, int]] = {}
        self.dst: list[int] = []
        self.src: list[int] = []
        self.wgt: list[int] = []

    def get(self, key: tuple, uops: Callable[[], list[tuple[int, int, int]]]) -> tuple[int, int]:
        """[begin, end) of the kernel `key`; `uops` builds its (dst, src, wgt) list the first time."""
        if key not in self.where:
            bgn = len(self.dst)
            for d, s, w in uops():
                self.dst.append(d)
                self.src.append(s)
                self.wgt.append(w)
            self.where[key] = (bgn, len(self.dst))
        return self.where[key]


@dataclass
class Step:
    """One tile step: which tiles it touches, where they sit, and the tokens it implies."""

    rt: int  # row, col and red tile indices
    ct: int
    lt: int
    inp_slot: int
    wgt_slot: int
    acc_slot: int
    acc_tile: int
    load_inp: bool
    load_wgt: bool
    first: bool  # first red step of its ACC tile
    last: bool  # last red step of its ACC tile
    needs_free: int = -1  # the step whose completion the loads must wait for
    frees: bool = False  # compute pushes g2l after this step
    bt: int = 0  # the batch element (plan.n_bats), outermost of all tile loops


class _SlotRing:
    """Round-robin slots of one scratchpad: which slot a load fills, and what it must wait for."""

    def __init__(self, slots: int):
        self.slots = slots
        self.tile: tuple | None = None  # the tile loaded last
        self.loads = 0
        self.slot = 0
        self.last_reader: dict[int, int] = {}  # slot -> last step that read it

    def use(self, tile: tuple, step: int) -> tuple[bool, int]:
        """Step `step` reads `tile`: (must it be loaded, the step whose reads must end first or -1)."""
        wait = -1
        load = tile != self.tile
        if load:
            self.slot = self.loads % self.slots
            self.loads += 1
            self.tile = tile
            wait = self.last_reader.get(self.slot, -1)
        self.last_reader[self.slot] = step
        return load, wait


def plan_steps(plan: Plan) -> list[Step]:
    """The tile steps in order, with slot choices and the waits they imply."""
    t = plan.tiling
    nr, nc, nl = plan.tiles
    outer_inner = [(a, b) for a in range(nr) for b in range(nc)] if t.outer == "row" else [
        (a, b) for b in range(nc) for a in range(nr)]
    steps: list[Step] = []
    inp, wgt = _SlotRing(t.inp_slots), _SlotRing(t.wgt_slots)
    batched = [(bt, rt, ct) for bt in range(plan.n_bats) for rt, ct in outer_inner]
    for tile, (bt, rt, ct) in enumerate(batched):
        for lt in range(nl):
            s = len(steps)
            load_inp, wait_inp = inp.use((bt, rt, lt), s)
            load_wgt, wait_wgt = wgt.use((bt, ct, lt), s)
            need = max(wait_inp, wait_wgt)
            steps.append(Step(rt, ct, lt, inp.slot, wgt.slot, tile % t.acc_slots, tile,
                              load_inp, load_wgt, first=lt == 0, last=lt == nl - 1, needs_free=need, bt=bt))
            if need >= 0:
                steps[need].frees = True
    return steps
