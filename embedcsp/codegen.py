"""VTA code generation: a plan in, a program (instructions, micro-ops, DRAM map) out.

Loop nest, per tile step (rt, ct, lt) in plan order, red innermost:
  load    [NOPs that wait for buffer slots]  LOAD INP?  LOAD WGT?
  compute [reset GEMM if first red step]  GEMM  [requant ALUs if last red step]
  store   STORE the finished ACC tile
One GEMM instruction covers a whole tile step with the hardware loops:
  outer = red element l, inner = row r, micro-ops = col element j
  acc = A + r*cols + j   inp = I + r*reds + l   wgt = W + j*reds + l
Dependency tokens (vta.md 3.1) enforce exactly the orderings the buffers need:
  l2g  the loads of a step are done; compute pops it before that step;
  g2l  the last step reading a slot that a later load overwrites is done;
       the load pops every such token up to the one it needs;
  g2s  an ACC tile is final; store pops it before the STORE;
  s2g  a stored ACC slot may be reused; compute pops it before the reset.
The last STORE pushes one more s2g that a compute NOP pops before FINISH, so
every module's work is ordered before FINISH and no token is left over.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from embedcsp.accelerator import MEM_INP, MEM_OUT, MEM_UOP, MEM_WGT, VtaConfig
from embedcsp.encoding import (
    ALU_MAX,
    ALU_MIN,
    ALU_SHR,
    OP_LOAD,
    OP_STORE,
    AluInsn,
    Deps,
    FinishInsn,
    GemmInsn,
    Insn,
    MemInsn,
    encode_uops,
)
from embedcsp.hazard import gemm_hazard
from embedcsp.layout import element_map
from embedcsp.plan import Plan
from embedcsp.reference import Epilogue

LOAD, COMPUTE, STORE = "load", "compute", "store"
PAGE = 4096  # DRAM regions start on page boundaries, as VTA's allocator gives them


@dataclass(frozen=True)
class Region:
    offset: int  # bytes into dram.bin
    size: int
    elem_bytes: int

    @property
    def base(self) -> int:
        """The region's address in LOAD/STORE units of its memory type."""
        return self.offset // self.elem_bytes


@dataclass(frozen=True, eq=False)
class Program:
    """A complete VTA program and the DRAM map it expects."""

    config: VtaConfig
    insns: tuple[Insn, ...]
    uops: np.ndarray  # uint32 words, placed at regions["uop"]
    regions: dict[str, Region]  # uop, inp, wgt, out
    element_maps: dict[str, np.ndarray]  # inp/wgt/acc -> tensor flat index per packed lane
    tensors: dict[str, str] = field(default_factory=dict)  # inp/wgt/acc -> tensor name

    @property
    def dram_size(self) -> int:
        return max(r.offset + r.size for r in self.regions.values())

    def insn_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for insn in self.insns:
            name = _kind(insn)
            counts[name] = counts.get(name, 0) + 1
        return counts


def _kind(insn: Insn) -> str:
    if isinstance(insn, MemInsn):
        if insn.x_size == 0:
            return "nop"
        return {OP_LOAD: "load", OP_STORE: "store"}[insn.opcode]
    if isinstance(insn, GemmInsn):
        return "gemm_reset" if insn.reset else "gemm"
    if isinstance(insn, AluInsn):
        return "alu"
    return "finish"


class _Kernels:
    """Micro-op kernels, each placed once in the UOP buffer."""

    def __init__(self) -> None:
        self.where: dict[tuple, tuple[int, int]] = {}
        self.dst: list[int] = []
        self.src: list[int] = []
        self.wgt: list[int] = []

    def get(self, key: tuple, uops: list[tuple[int, int, int]]) -> tuple[int, int]:
        if key not in self.where:
            bgn = len(self.dst)
            for d, s, w in uops:
                self.dst.append(d)
                self.src.append(s)
                self.wgt.append(w)
            self.where[key] = (bgn, len(self.dst))
        return self.where[key]


@dataclass
class _Step:
    rt: int
    ct: int
    lt: int
    rows: int
    cols: int
    reds: int
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


def _steps(plan: Plan) -> list[_Step]:
    """The tile steps in order, with slot choices and the waits they imply."""
    t = plan.tiling
    nr, nc, nl = plan.tiles
    outer_inner = [(a, b) for a in range(nr) for b in range(nc)] if t.outer == "row" else [
        (a, b) for b in range(nc) for a in range(nr)]
    steps: list[_Step] = []
    inp, wgt = _SlotRing(t.inp_slots), _SlotRing(t.wgt_slots)
    for tile, (rt, ct) in enumerate(outer_inner):
        for lt in range(nl):
            s = len(steps)
            load_inp, wait_inp = inp.use((rt, lt), s)
            load_wgt, wait_wgt = wgt.use((ct, lt), s)
            need = max(wait_inp, wait_wgt)
            steps.append(_Step(
                rt, ct, lt,
                rows=min(t.rows, plan.n_rows - rt * t.rows),
                cols=min(t.cols, plan.n_cols - ct * t.cols),
                reds=min(t.reds, plan.n_reds - lt * t.reds),
                inp_slot=inp.slot, wgt_slot=wgt.slot, acc_slot=tile % t.acc_slots, acc_tile=tile,
                load_inp=load_inp, load_wgt=load_wgt, first=lt == 0, last=lt == nl - 1,
                needs_free=need,
            ))
            if need >= 0:
                steps[need].frees = True
    return steps


def element_maps(plan: Plan) -> dict[str, np.ndarray]:
    """The packed layouts; they depend on the embedding only, not on the tiling."""
    return {name: element_map(plan.embedding, name) for name in ("inp", "wgt", "acc")}


def generate(plan: Plan, epilogue: Epilogue, maps: dict[str, np.ndarray] | None = None) -> Program:
    emb = plan.embedding
    cfg = emb.accelerator.vta
    t = plan.tiling
    maps = maps if maps is not None else element_maps(plan)
    steps = _steps(plan)
    n_tiles = steps[-1].acc_tile + 1

    # DRAM regions; the uop region's size is known only after generation, so it goes last.
    regions: dict[str, Region] = {}
    offset = 0
    for name, mem in (("inp", MEM_INP), ("wgt", MEM_WGT), ("out", MEM_OUT)):
        size = int(maps["acc" if name == "out" else name].size)
        regions[name] = Region(offset, size, cfg.elem_bytes(mem))
        offset = -(-(offset + size) // PAGE) * PAGE
    inp_base = [k * t.rows * t.reds for k in range(t.inp_slots)]
    wgt_base = [k * t.cols * t.reds for k in range(t.wgt_slots)]
    acc_base = [k * t.rows * t.cols for k in range(t.acc_slots)]

    kernels = _Kernels()
    stream: list[tuple[str, Insn]] = []
    events = [s for s, st in enumerate(steps) if st.frees]  # g2l tokens, in push order
    popped = 0  # g2l tokens the load module has consumed

    for s, st in enumerate(steps):
        # ---- load module
        loads: list[Insn] = []
        if st.load_inp:
            loads.append(MemInsn(OP_LOAD, MEM_INP, inp_base[st.inp_slot],
                                 regions["inp"].base + st.rt * t.rows * plan.n_reds + st.lt * t.reds,
                                 st.rows, st.reds, plan.n_reds))
        if st.load_wgt:
            loads.append(MemInsn(OP_LOAD, MEM_WGT, wgt_base[st.wgt_slot],
                                 regions["wgt"].base + st.ct * t.cols * plan.n_reds + st.lt * t.reds,
                                 st.cols, st.reds, plan.n_reds))
        if loads:
            pops = 0
            while popped < len(events) and events[popped] <= st.needs_free:
                popped += 1
                pops += 1
            nops = [_nop(LOAD, Deps(pop_next=True)) for _ in range(max(pops - 1, 0))]
            if pops:
                loads[0] = replace(loads[0], deps=Deps(pop_next=True))
            loads[-1] = replace(loads[-1], deps=replace(loads[-1].deps, push_next=True))
            stream += [(LOAD, i) for i in nops + loads]

        # ---- compute module
        work: list[Insn] = []
        a0, i0, w0 = acc_base[st.acc_slot], inp_base[st.inp_slot], wgt_base[st.wgt_slot]
        if st.first:
            bgn, end = kernels.get(("reset", st.acc_slot), [(a0, 0, 0)])
            work.append(GemmInsn(True, bgn, end, st.rows, st.cols, dst_factor_out=st.cols, dst_factor_in=1))
        key = ("gemm", st.acc_slot, st.inp_slot, st.wgt_slot, st.cols, st.reds)
        bgn, end = kernels.get(key, [(a0 + j, i0, w0 + j * st.reds) for j in range(st.cols)])
        assert not gemm_hazard(np.arange(st.cols), st.reds, st.rows, 0, st.cols), "plan allowed a hazard"
        work.append(GemmInsn(False, bgn, end, iter_out=st.reds, iter_in=st.rows,
                             dst_factor_out=0, dst_factor_in=st.cols,
                             src_factor_out=1, src_factor_in=st.reds,
                             wgt_factor_out=1, wgt_factor_in=0))
        if st.last and epilogue.kind == "requant":
            bgn, end = kernels.get(("alu", st.acc_slot), [(a0, a0, 0)])
            for opcode, imm in ((ALU_SHR, epilogue.shift), (ALU_MIN, 127), (ALU_MAX, -128)):
                work.append(AluInsn(opcode, bgn, end, st.rows, st.cols, dst_factor_out=st.cols,
                                    dst_factor_in=1, src_factor_out=st.cols, src_factor_in=1,
                                    use_imm=True, imm=imm))
        waits_store = st.first and st.acc_tile >= t.acc_slots
        work[0] = replace(work[0], deps=replace(work[0].deps, pop_prev=bool(loads), pop_next=waits_store))
        work[-1] = replace(work[-1], deps=replace(work[-1].deps, push_prev=st.frees, push_next=st.last))
        stream += [(COMPUTE, i) for i in work]

        # ---- store module
        if st.last:
            tile = st.acc_tile
            frees_acc = tile + t.acc_slots < n_tiles or tile == n_tiles - 1
            stream.append((STORE, MemInsn(
                OP_STORE, MEM_OUT, acc_base[st.acc_slot],
                regions["out"].base + st.rt * t.rows * plan.n_cols + st.ct * t.cols,
                st.rows, st.cols, plan.n_cols, deps=Deps(pop_prev=True, push_prev=frees_acc))))

    assert popped == len(events), "a g2l token was never consumed"
    uops = encode_uops(np.array(kernels.dst), np.array(kernels.src), np.array(kernels.wgt), cfg)
    regions["uop"] = Region(offset, int(uops.size) * 4, cfg.uop_elem_bytes)
    uop_load = MemInsn(OP_LOAD, MEM_UOP, 0, regions["uop"].base, 1, int(uops.size), int(uops.size))
    insns = [uop_load] + [i for _, i in stream]
    insns.append(_nop(COMPUTE, Deps(pop_next=True)))  # the last STORE's token
    insns.append(FinishInsn())
    tensors = {name: emb.bound[name] for name in ("inp", "wgt", "acc")}
    return Program(cfg, tuple(insns), uops, regions, maps, tensors)


def _nop(module: str, deps: Deps) -> MemInsn:
    """A token-only instruction: x_size = 0 moves no data (runtime convention)."""
    mem = MEM_INP if module == LOAD else MEM_UOP
    return MemInsn(OP_LOAD, mem, 0, 0, 0, 0, 0, deps=deps)


def dram_image(program: Program, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """dram.bin: micro-ops, inputs in accelerator layout, zeros where outputs go."""
    dram = np.zeros(program.dram_size, np.uint8)
    uop = program.regions["uop"]
    dram[uop.offset:uop.offset + uop.size] = program.uops.view(np.uint8)
    for name in ("inp", "wgt"):
        emap = program.element_maps[name]
        values = inputs[program.tensors[name]].reshape(-1).view(np.uint8)
        region = program.regions[name]
        packed = dram[region.offset:region.offset + region.size].reshape(len(emap), -1)
        for row, part in enumerate(emap.reshape(len(emap), -1)):  # slabs keep memory flat
            held = part >= 0
            packed[row, held] = values[part[held]]
    return dram


def output_dram(program: Program, shape: tuple[int, ...]) -> np.ndarray:
    """Byte offset in dram.bin of every output element, in the output's logical shape."""
    emap = program.element_maps["acc"].reshape(-1)
    where = np.flatnonzero(emap >= 0)
    dram = np.full(int(np.prod(shape)), -1, np.int64)
    dram[emap[where]] = program.regions["out"].offset + where
    assert (dram >= 0).all(), "an output element has no place in DRAM"
    return dram.reshape(shape)


def layout_arrays(program: Program, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """layout.npz: where each tensor element lives in dram.bin (design.md 4)."""
    out: dict[str, np.ndarray] = {}
    for name in ("inp", "wgt"):
        emap = program.element_maps[name].reshape(-1)
        where = np.flatnonzero(emap >= 0)
        tensor = program.tensors[name]
        out[f"{tensor}_dram"] = (program.regions[name].offset + where).astype(np.int64)
        out[f"{tensor}_index"] = emap[where].astype(np.int64)
    tensor = program.tensors["acc"]
    out[f"{tensor}_dram"] = output_dram(program, shapes[tensor])
    return out
