"""Code generation: a plan in, a tile program (one array of records) and its DRAM map out
(docs/tile.md section 10).

Program, step by step (steps in the plan's loop order, reduction innermost):
  load     the step's tiles of each input whose block changed, reduction index outermost,
           each into the next slot of that operand's ring; with an unsigned input, the
           correction tile of each output tile at the first step of its output block
  compute  every instance of the block, reduction index outermost; the first write of an
           output tile starts its sum (accumulate = 0, or on the loaded correction)
  store    after the last reduction step of an output block, each of its tiles
Waits are computed directly, in bulk, from the ring assignment:
  compute  after_load  = the last Load of the tiles it reads (+1)
           after_store = the Store of the tile that last held its output slot, on the
                         tile's first write
  load     after_compute = the last Compute reading the tile that last held its slot
           (a correction Load: after_store of that slot's previous tile)
  store    after_compute = the last Compute writing its tile
Every other order follows from these through program order, so the model finds no race;
the DRAM regions of inputs, corrections and outputs are disjoint, so no Load ever waits
for a Store. Everything is numpy over arrays of events: no Python loop per record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from embedcsp.errors import BadInput
from embedcsp.operator import MAX_DRAM_BYTES
from embedcsp.targets.tile.blocked import Blocked
from embedcsp.targets.tile.config import TileConfig
from embedcsp.targets.tile.plan import Plan, store_bytes
from embedcsp.targets.tile.program import EPILOGUES, Insn
from embedcsp.targets.tile.records import OPCODE, RECORD, counts, to_insns
from embedcsp.targets.tile.timing import _shape_cost

ALIGN = 64  # DRAM regions start on 64-byte boundaries, one record's size
UNSIGNED_OFFSET = 128  # int8 data v is held as v + 128 in a uint8 operand


@dataclass(frozen=True)
class Region:
    offset: int  # bytes into the DRAM image
    size: int
    elem_bytes: int


@dataclass(frozen=True, eq=False)
class Layout:
    """What the host does around a program: where each operand's tiles are in DRAM and which
    tensor element each lane holds (docs/tile.md section 10, "DRAM image")."""

    config: TileConfig
    axes: dict[str, tuple[str, ...]]  # pattern operand -> its classes (layout.operand_axes)
    packed: dict[str, np.ndarray]  # pattern operand -> int32 [tiles..., *tile_shape], -1: zero
    tensors: dict[str, str]  # pattern operand -> operator tensor
    regions: dict[str, Region]  # each operand's tiles, and "bias" when there is a correction
    epilogue: str

    @property
    def dram_size(self) -> int:
        return max(r.offset + r.size for r in self.regions.values())

    def offset(self, operand: str) -> int:
        """What the host adds to an int8 element of an input: 128 for a uint8 operand."""
        return UNSIGNED_OFFSET if not self.config.dtype(operand).signed else 0

    @property
    def bias(self) -> bool:
        return "bias" in self.regions


@dataclass(frozen=True, eq=False)
class Program:
    """A complete tile program: records in program order and the DRAM layout it expects."""

    config: TileConfig
    records: np.ndarray  # RECORD structured array; its bytes are program.bin
    layout: Layout
    element_maps: dict[str, np.ndarray]  # pattern operand -> layout.element_map (class-major)

    @property
    def dram_size(self) -> int:
        return self.layout.dram_size

    @cached_property
    def insns(self) -> tuple[Insn, ...]:
        return tuple(to_insns(self.records, self.config))

    def insn_counts(self) -> dict[str, int]:
        return counts(self.records)

    def __len__(self) -> int:
        return len(self.records)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def row_major(shape: tuple[int, ...], esz: int) -> tuple[int, ...]:
    """Byte strides of a C-ordered tile."""
    out, step = [], esz
    for e in reversed(shape):
        out.append(step)
        step *= e
    return tuple(reversed(out))


def valid_boxes(packed: np.ndarray, tile_shape: tuple[int, ...], esz: int, bpc: int,
                trim: bool) -> np.ndarray:
    """int64 [tiles, rank]: the part of each tile a transfer moves.

    The bounding box of its real lanes (lanes beyond it are padding, which a Load fills with
    zeros) when that is cheaper to move than the whole tile, which is one contiguous run."""
    rank = len(tile_shape)
    tiles = packed.reshape(-1, *tile_shape) if rank else packed.reshape(-1)
    full = np.array(tile_shape, np.int64)
    if rank == 0:
        return np.zeros((tiles.shape[0], 0), np.int64)
    if not trim:
        return np.broadcast_to(full, (tiles.shape[0], rank)).copy()
    real = tiles >= 0
    box = np.empty((tiles.shape[0], rank), np.int64)
    for d in range(rank):
        other = tuple(i for i in range(1, rank + 1) if i != d + 1)
        along = real.any(axis=other) if other else real
        # last real index + 1 along d, 0 if the tile holds no real element
        box[:, d] = np.where(along.any(1), tile_shape[d] - np.argmax(along[:, ::-1], axis=1), 0)
    strides = row_major(tile_shape, esz)
    whole = _cost(strides, tuple(tile_shape), esz, bpc)
    shapes, inverse = np.unique(box, axis=0, return_inverse=True)
    keep = np.array([_cost(strides, tuple(int(v) for v in s), esz, bpc) < whole for s in shapes])
    chosen = np.where(keep[:, None], shapes, full[None, :])
    return chosen[inverse.reshape(-1)]


def _cost(strides: tuple[int, ...], valid: tuple[int, ...], esz: int, bpc: int) -> int:
    nbytes, runs = _shape_cost(strides, valid, esz)
    return 2 * runs + -(-nbytes // bpc)


def make_layout(b: Blocked, epilogue: str, bias: bool) -> Layout:
    """DRAM regions in the order first input, second input, corrections, output."""
    cfg = b.cfg
    a_name, b_name, o_name = cfg.operand_names
    packed = {q: b.packed_index(q) for q in cfg.operand_names}
    regions: dict[str, Region] = {}
    offset = 0
    sizes = [(a_name, cfg.dtype(a_name).bytes), (b_name, cfg.dtype(b_name).bytes)]
    if bias:
        sizes.append(("bias", cfg.dtype(o_name).bytes))
    sizes.append((o_name, store_bytes(epilogue)))
    for name, esz in sizes:
        lanes = packed[o_name if name == "bias" else name].size
        regions[name] = Region(offset, int(lanes) * esz, esz)
        offset = _round_up(offset + int(lanes) * esz, ALIGN)
    if offset > MAX_DRAM_BYTES:
        raise BadInput(f"{b.embedding.operator.describe()} needs a {offset / 2**30:.1f} GiB DRAM image "
                       f"in accelerator layout; embedcsp builds and checks images up to "
                       f"{MAX_DRAM_BYTES >> 30} GiB")
    tensors = {q: b.embedding.bound[q] for q in cfg.operand_names}
    return Layout(cfg, {q: b.axes_of(q) for q in cfg.operand_names}, packed, tensors, regions, epilogue)


# ---------------------------------------------------------------- events

def _local_grid(sizes: list[int]) -> np.ndarray:
    """[prod(sizes), len(sizes)] row-major coordinates."""
    if not sizes:
        return np.zeros((1, 0), np.int64)
    return np.stack(np.unravel_index(np.arange(math.prod(sizes)), sizes), 1).astype(np.int64)


def _changes(steps: np.ndarray, cols: list[int]) -> np.ndarray:
    """Steps where the block indices in `cols` differ from the previous step's."""
    new = np.ones(len(steps), bool)
    if len(steps) > 1:
        new[1:] = (steps[1:, cols] != steps[:-1, cols]).any(1) if cols else False
    return new


def _last(keys: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """For each key 0..n-1 the largest value with that key, -1 if none."""
    out = np.full(n, -1, np.int64)
    np.maximum.at(out, keys, values)
    return out


def generate(plan: Plan, layout: Layout) -> np.ndarray:
    """The program's records (RECORD array, program order)."""
    b, t = plan.blocked, plan.tiling
    cfg = b.cfg
    a_name, b_name, o_name = cfg.operand_names
    order = list(t.order)
    T = np.array([t.size(c) for c in order], np.int64)
    K = np.array([plan.blocks(c) for c in order], np.int64)
    N = np.array([b.count(c) for c in order], np.int64)
    steps = _local_grid([int(k) for k in K]) if order else np.zeros((1, 0), np.int64)
    S = len(steps)
    pos = {q: [order.index(c) for c in b.axes_of(q)] for q in cfg.operand_names}

    def tiles_of(q: str):
        """Local tiles of a block of q: (coords [nT, axes], flat index, reduction coordinate)."""
        p = pos[q]
        grid = _local_grid([int(T[i]) for i in p])
        red = grid[:, p.index(order.index("red"))] if "red" in order and order.index("red") in p \
            else np.zeros(len(grid), np.int64)
        return grid, red

    # ---- load events: (step, reduction coordinate, operand, local index) orders the queue
    ev_step, ev_red, ev_op, ev_local, ev_tile = [], [], [], [], []
    loadstep = {}
    inputs = (a_name, b_name)
    for qi, q in enumerate(inputs):
        new = _changes(steps, pos[q])
        ls = np.flatnonzero(new)
        loadstep[q] = np.cumsum(new) - 1
        grid, red = tiles_of(q)
        glob = steps[ls][:, None, pos[q]] * T[pos[q]] + grid[None, :, :]  # [nL, nT, axes]
        ok = (glob < N[pos[q]]).all(-1)
        sel_l, sel_t = np.nonzero(ok)
        ev_step.append(ls[sel_l])
        ev_red.append(red[sel_t])
        ev_op.append(np.full(len(sel_l), qi))
        ev_local.append(sel_l * len(grid) + sel_t)  # index into the [nL, nT] table
        ev_tile.append(np.ravel_multi_index(tuple(glob[sel_l, sel_t].T), b.grid(q)) if pos[q]
                       else np.zeros(len(sel_l), np.int64))
    # output tiles: numbered block by block, valid ones in local order
    new_o = _changes(steps, pos[o_name])
    ob = np.cumsum(new_o) - 1
    o_steps = np.flatnonzero(new_o)
    o_grid, _ = tiles_of(o_name)
    o_glob = steps[o_steps][:, None, pos[o_name]] * T[pos[o_name]] + o_grid[None]
    o_ok = (o_glob < N[pos[o_name]]).all(-1)
    o_number = np.full(o_ok.shape, -1, np.int64)
    o_number[o_ok] = np.arange(int(o_ok.sum()))
    n_out = int(o_ok.sum())
    o_sel_b, o_sel_t = np.nonzero(o_ok)
    o_tile = (np.ravel_multi_index(tuple(o_glob[o_sel_b, o_sel_t].T), b.grid(o_name)) if pos[o_name]
              else np.zeros(n_out, np.int64))  # output tile number -> its tile in the grid
    if plan.bias:
        ev_step.append(o_steps[o_sel_b])
        ev_red.append(np.full(n_out, -1))
        ev_op.append(np.full(n_out, 2))
        ev_local.append(np.arange(n_out))
        ev_tile.append(o_tile)
    ev_step, ev_red, ev_op, ev_local, ev_tile = (np.concatenate(x).astype(np.int64) for x in
                                                 (ev_step, ev_red, ev_op, ev_local, ev_tile))
    load_order = np.lexsort((ev_local, ev_op, ev_red, ev_step))
    load_no = np.empty(len(load_order), np.int64)
    load_no[load_order] = np.arange(len(load_order))
    n_loads = len(load_order)

    # per operand: [nL, nT] -> load number, and the ring counter of each of its loads
    table, ring = {}, {}
    for qi, q in enumerate((*inputs, o_name)):
        mine = np.flatnonzero(ev_op == qi)
        if qi < 2:
            n_l = int(loadstep[q][-1]) + 1
            tab = np.full(n_l * len(tiles_of(q)[0]), -1, np.int64)
            tab[ev_local[mine]] = load_no[mine]
            table[q] = tab.reshape(n_l, -1)
        else:
            tab = np.full(n_out, -1, np.int64)
            tab[ev_local[mine]] = load_no[mine]
            table[q] = tab
        counter = np.empty(len(mine), np.int64)
        counter[np.argsort(load_no[mine], kind="stable")] = np.arange(len(mine))
        ring[q] = (mine, counter)

    # ---- computes: step-major, then local instances with the reduction coordinate outermost
    local_order = ([order.index("red")] if "red" in order else []) + \
        [i for i, c in enumerate(order) if c != "red"]
    inst = _local_grid([int(T[i]) for i in local_order])
    local = np.empty_like(inst)
    local[:, local_order] = inst  # back to `order` columns
    glob = steps[:, None, :] * T + local[None, :, :]
    ok = (glob < N).all(-1)
    c_step, c_local = np.nonzero(ok)
    n_comp = len(c_step)
    lc = local[c_local]

    def local_flat(q: str) -> np.ndarray:
        p = pos[q]
        if not p:
            return np.zeros(n_comp, np.int64)
        return np.ravel_multi_index(tuple(lc[:, p].T), tuple(int(T[i]) for i in p))

    la = table[a_name][loadstep[a_name][c_step], local_flat(a_name)]
    lb = table[b_name][loadstep[b_name][c_step], local_flat(b_name)]
    o = o_number[ob[c_step], local_flat(o_name)]
    assert (la >= 0).all() and (lb >= 0).all() and (o >= 0).all(), "a compute reads a tile never loaded"
    comp = np.arange(n_comp, dtype=np.int64)
    first = np.zeros(n_comp, bool)
    first[np.unique(o, return_index=True)[1]] = True

    slots = {q: cfg.slots(q) for q in cfg.operand_names}
    slot_of_load = np.zeros(n_loads, np.int64)
    counter_of_load = np.zeros(n_loads, np.int64)
    for q in (*inputs, o_name):
        mine, counter = ring[q]
        slot_of_load[load_no[mine]] = counter % slots[q]
        counter_of_load[load_no[mine]] = counter
    r_out = slots[o_name]
    out_slot = o % r_out

    # compute waits
    after_load = np.maximum(la, lb) + 1
    if plan.bias:
        after_load = np.where(first, np.maximum(after_load, table[o_name][o] + 1), after_load)
    after_store = np.where(first & (o >= r_out), o - r_out + 1, 0)
    # input loads: after the last compute reading the previous tile of the slot
    load_after_compute = np.zeros(n_loads, np.int64)
    load_after_store = np.zeros(n_loads, np.int64)
    for q, reads in ((a_name, la), (b_name, lb)):
        mine, counter = ring[q]
        last_read = _last(counter_of_load[reads], comp, len(mine))  # by ring counter
        prev = counter - slots[q]
        has = prev >= 0
        w = np.zeros(len(mine), np.int64)
        w[has] = last_read[prev[has]] + 1
        load_after_compute[load_no[mine]] = w
    if plan.bias:
        mine, counter = ring[o_name]
        tile_no = ev_local[mine]
        load_after_store[load_no[mine]] = np.where(tile_no >= r_out, tile_no - r_out + 1, 0)
    last_write = _last(o, comp, n_out)
    store_after_compute = last_write + 1

    # ---- records
    rec = np.zeros(n_loads + n_comp + n_out, RECORD)
    L, C = rec[:n_loads], rec[n_loads:n_loads + n_comp]
    St = rec[n_loads + n_comp:]
    # loads, in queue order
    lo = load_order
    L["opcode"] = OPCODE["load"]
    L["operand"] = ev_op[lo]
    L["after"][:, 1] = load_after_compute  # indexed by load number, which is queue order
    L["after"][:, 2] = load_after_store
    L["w16"] = slot_of_load
    for qi, q in enumerate((*inputs, o_name)):
        sel = np.flatnonzero(ev_op[lo] == qi)
        if not len(sel):
            continue
        region = layout.regions["bias" if qi == 2 else q]
        shape = cfg.tile_shape(q)
        rank = len(shape)
        esz = region.elem_bytes
        tile = ev_tile[lo][sel]
        L["rank"][sel] = rank
        L["w24"][sel] = region.offset + tile * math.prod(shape) * esz
        if rank:
            L["strides"][sel, :rank] = row_major(shape, esz)
            trim = qi < 2 and layout.offset(q) == 0
            boxes = valid_boxes(layout.packed[q], shape, esz, cfg.bytes_per_cycle, trim)
            L["valid"][sel, :rank] = boxes[tile]
    # computes
    C["opcode"] = OPCODE["compute"]
    C["flags"] = (~first | plan.bias).astype(np.uint8)
    C["after"][:, 0] = after_load
    C["after"][:, 2] = after_store
    C["w16"] = slot_of_load[la]
    C["w20"] = slot_of_load[lb]
    C["w24"] = out_slot
    # stores, one per output tile in number order
    shape = cfg.tile_shape(o_name)
    rank = len(shape)
    region = layout.regions[o_name]
    St["opcode"] = OPCODE["store"]
    St["operand"] = 2
    St["flags"] = EPILOGUES.index(plan.epilogue)
    St["rank"] = rank
    St["after"][:, 1] = store_after_compute
    St["w16"] = np.arange(n_out) % r_out
    St["w24"] = region.offset + o_tile * math.prod(shape) * region.elem_bytes
    if rank:
        St["strides"][:, :rank] = row_major(shape, region.elem_bytes)
        boxes = valid_boxes(layout.packed[o_name], shape, region.elem_bytes, cfg.bytes_per_cycle, True)
        St["valid"][:, :rank] = boxes[o_tile]

    # program order: a step's loads, its computes, then the stores of a finished output block
    o_end = np.zeros(n_out, np.int64)
    block_last = np.r_[o_steps[1:] - 1, S - 1]  # last step of each output block
    o_end[:] = block_last[o_sel_b]
    key_step = np.concatenate([ev_step[lo], c_step, o_end])
    key_kind = np.concatenate([np.zeros(n_loads), np.ones(n_comp), np.full(n_out, 2)])
    key_seq = np.arange(len(rec))
    return rec[np.lexsort((key_seq, key_kind, key_step))]
