"""Plan: cut the blocked product into blocks that fit the slots, and order the block loops
(docs/tile.md section 10).

A block holds T_c instances along every class c. One *step* is one block of instances:
its input tiles are loaded (unless the previous step's are the same), every instance in it
is computed, and after the last reduction step of an output block its tiles are stored.
The reduction loop is innermost, so partial sums stay in the output's slots; the order of
the other classes decides which input stays resident and is reused across steps.

Each operand's memory is used as a ring of slots: tile j of the operand goes to slot
j mod slots. A block must fit the ring (B_q <= slots); two or more blocks in the ring let
the next block load while the current one computes, and the output's next block compute
while the previous one is stored. The estimate below ranks tilings; the build re-ranks the
best few with the cycle model proper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import permutations, product

from embedcsp.errors import NoEmbedding
from embedcsp.targets.tile.blocked import Blocked
from embedcsp.targets.tile.timing import DMA_RUN, ISSUE
from embedcsp.targets.tiling import candidate_extents


@dataclass(frozen=True)
class Tiling:
    block: tuple[tuple[str, int], ...]  # instances per block along each class
    order: tuple[str, ...]  # the block loops, outermost first; "red" (if any) last

    def size(self, cls: str) -> int:
        return dict(self.block).get(cls, 1)


@dataclass(frozen=True, eq=False)
class Plan:
    blocked: Blocked
    tiling: Tiling
    bias: bool  # an unsigned input needs a correction tile loaded into each output tile
    epilogue: str  # the Store's epilogue
    estimated_cycles: int

    def blocks(self, cls: str) -> int:
        return -(-self.blocked.count(cls) // self.tiling.size(cls))

    @property
    def steps(self) -> int:
        return math.prod(self.blocks(c) for c in self.blocked.classes)

    def block_tiles(self, operand: str) -> int:
        return math.prod(self.tiling.size(c) for c in self.blocked.axes_of(operand))

    def depth(self, operand: str) -> int:
        """Blocks of the operand its ring of slots holds."""
        return self.blocked.cfg.slots(operand) // self.block_tiles(operand)

    def tile_loads(self, operand: str) -> int:
        """Tiles of an input loaded over the program: once per change of its block."""
        b = self.blocked
        axes = b.axes_of(operand)
        order = self.tiling.order
        inner = [i for i, c in enumerate(order) if c in axes and self.blocks(c) > 1]
        reload = 1
        if inner:
            reload = math.prod(self.blocks(c) for c in order[:inner[-1]] if c not in axes)
        return b.tiles(operand) * reload


def store_bytes(epilogue: str) -> int:
    """Bytes a Store writes per element (docs/tile.md section 6)."""
    return 4 if epilogue == "int32" else 1


def transfer_cycles(nbytes: int, bytes_per_cycle: int) -> int:
    """A contiguous tile's DMA cost: one descriptor, one run."""
    return ISSUE + DMA_RUN + -(-nbytes // bytes_per_cycle)


def estimate(plan: Plan) -> int:
    """Cycles under a simple overlap model: compute and DMA overlap when every ring holds two
    blocks, plus the first block's loads and the last block's stores."""
    b, cfg = plan.blocked, plan.blocked.cfg
    a_name, b_name, o_name = cfg.operand_names
    bpc = cfg.bytes_per_cycle
    cost = {q: transfer_cycles(cfg.tile_bytes(q), bpc) for q in (a_name, b_name)}
    out_elems = math.prod(cfg.tile_shape(o_name))
    store = transfer_cycles(out_elems * store_bytes(plan.epilogue), bpc)
    bias = transfer_cycles(cfg.tile_bytes(o_name), bpc) if plan.bias else 0
    loads = sum(plan.tile_loads(q) * cost[q] for q in (a_name, b_name))
    stores = b.tiles(o_name) * (store + bias)
    compute = cfg.ii * b.instances
    fill = sum(plan.block_tiles(q) * cost[q] for q in (a_name, b_name))
    drain = plan.block_tiles(o_name) * store
    # A ring of one block still overlaps, tile by tile, but each new block waits for slots
    # the current one frees: about half a block's transfer time per change of block.
    serial = 0
    for q in (a_name, b_name):
        if plan.depth(q) < 2:
            serial += plan.tile_loads(q) * cost[q] // 2
    if plan.depth(o_name) < 2:
        serial += stores // 2
    return int(max(compute, loads + stores) + fill + drain + serial)




def candidate_plans(b: Blocked, bias: bool, epilogue: str, count: int = 8) -> list[Plan]:
    """The `count` best tilings by the estimate, best first; NoEmbedding if no block fits.

    Every memory is one ring of slots, so there is no separate double-buffering switch:
    a block that fits the ring twice is double-buffered, one that fills it overlaps tile by
    tile (the estimate charges it)."""
    cfg = b.cfg
    slots = {q: cfg.slots(q) for q in cfg.operand_names}
    classes = b.classes
    # The largest block along a class: every operand moving along it must hold one.
    caps = {c: min(slots[q] for q, axes in b.axes if c in axes) for c in classes}
    sizes = [candidate_extents(b.count(c), caps[c]) for c in classes]
    outer = [c for c in classes if c != "red"]
    orders = [(*p, "red") if "red" in classes else p for p in permutations(outer)]
    scored = []
    for combo in product(*sizes):
        block = tuple(zip(classes, combo))
        sz = dict(block)
        need = {q: math.prod(sz[c] for c in axes) for q, axes in b.axes}
        if any(need[q] > slots[q] for q in need):
            continue
        seen = set()
        for order in orders:
            # Loops of one block do not move: orders that differ only there are the same plan.
            key = tuple(c for c in order if -(-b.count(c) // sz[c]) > 1)
            if key in seen:
                continue
            seen.add(key)
            plan = Plan(b, Tiling(block, order), bias, epilogue, 0)
            scored.append((estimate(plan), -math.prod(combo), order, plan))
    if not scored:
        shapes = ", ".join(f"{q}: {slots[q]} slot(s)" for q in cfg.operand_names)
        raise NoEmbedding(f"no block of tiles fits the memories ({shapes})")
    scored.sort(key=lambda s: s[:3])
    return [Plan(p.blocked, p.tiling, p.bias, p.epilogue, est) for est, _, _, p in scored[:count]]
