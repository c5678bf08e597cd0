"""VTA code generation: a plan in, a program (instructions, micro-ops, DRAM map) out.

Loop nest, per tile step (rt, ct, lt) in plan order, red innermost:
  load    [NOPs that wait for buffer slots]  LOAD INP?  LOAD WGT?
  compute [reset GEMM if first red step]  GEMM  [requant ALUs if last red step]
  store   STORE the finished ACC tile
The address arithmetic of loads, GEMMs and stores belongs to the layout form:
MatrixForm here (packed rows x red matrices), DirectForm in embedcsp.targets.vta.direct
(channel-blocked tensors walked by the filter window).
Dependency tokens (docs/vta.md section 3) enforce exactly the orderings the buffers need:
  l2g  the loads of a step are done; compute pops it before that step;
  g2l  the last step reading a slot that a later load overwrites is done;
       the load pops every such token up to the one it needs;
  g2s  an ACC tile is final; store pops it before the STORE;
  s2g  a stored ACC slot may be reused; compute pops it before the reset.
The last STORE pushes one more s2g that a compute NOP pops before FINISH, so
every module's work is ordered before FINISH and no token is left over.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from functools import lru_cache

import numpy as np

from embedcsp.layout import element_map
from embedcsp.reference import Epilogue
from embedcsp.targets.vta.config import MEM_INP, MEM_OUT, MEM_UOP, MEM_WGT, VtaConfig
from embedcsp.targets.vta.direct import DirectForm, direct_element_maps
from embedcsp.targets.vta.encoding import (
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
from embedcsp.targets.vta.hazard import gemm_hazard
from embedcsp.targets.vta.plan import Plan
from embedcsp.targets.vta.steps import Kernels, Step, plan_steps

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


class MatrixForm:
    """Address arithmetic of the packed-matrix layout (operand_axes in embedcsp.layout); with
    a batch axis, batch element b's matrices follow b-1's in each region.

    One GEMM covers a tile step with the hardware loops:
      outer = red element l, inner = row r, micro-ops = col element j
      acc = A + r*cols + j   inp = I + r*reds + l   wgt = W + j*reds + l
    """

    def __init__(self, plan: Plan):
        self.plan = plan
        t = plan.tiling
        self.slot_elems = (t.rows * t.reds, t.cols * t.reds, t.rows * t.cols)  # inp, wgt, acc

    def _extents(self, st: Step) -> tuple[int, int, int]:
        p, t = self.plan, self.plan.tiling
        return (min(t.rows, p.n_rows - st.rt * t.rows), min(t.cols, p.n_cols - st.ct * t.cols),
                min(t.reds, p.n_reds - st.lt * t.reds))

    def acc_shape(self, st: Step) -> tuple[int, int]:
        rows, cols, _ = self._extents(st)
        return rows, cols

    def cost_key(self, st: Step) -> tuple[int, int, int]:
        """What the cycles of a step's instructions depend on besides slots and flags
        (stepcost.py): the tile's extents; addresses cost nothing."""
        return self._extents(st)

    def load_inp(self, st: Step, sram: int, dram: int) -> list[MemInsn]:
        p, t = self.plan, self.plan.tiling
        rows, _, reds = self._extents(st)
        base = dram + st.bt * p.n_rows * p.n_reds  # each batch element's own slice of the region
        return [MemInsn(OP_LOAD, MEM_INP, sram, base + st.rt * t.rows * p.n_reds + st.lt * t.reds,
                        rows, reds, p.n_reds)]

    def load_wgt(self, st: Step, sram: int, dram: int) -> list[MemInsn]:
        p, t = self.plan, self.plan.tiling
        _, cols, reds = self._extents(st)
        base = dram + st.bt * p.n_cols * p.n_reds
        return [MemInsn(OP_LOAD, MEM_WGT, sram, base + st.ct * t.cols * p.n_reds + st.lt * t.reds,
                        cols, reds, p.n_reds)]

    def gemm(self, st: Step, a0: int, i0: int, w0: int, kernels: Kernels) -> list[GemmInsn]:
        rows, cols, reds = self._extents(st)
        key = ("gemm", a0, i0, w0, cols, reds)
        bgn, end = kernels.get(key, lambda: [(a0 + j, i0, w0 + j * reds) for j in range(cols)])
        assert not _hazard(cols, reds, rows), "plan allowed a hazard"
        return [GemmInsn(False, bgn, end, iter_out=reds, iter_in=rows, dst_factor_out=0,
                         dst_factor_in=cols, src_factor_out=1, src_factor_in=reds,
                         wgt_factor_out=1, wgt_factor_in=0)]

    def store(self, st: Step, sram: int, dram: int) -> list[MemInsn]:
        p, t = self.plan, self.plan.tiling
        rows, cols, _ = self._extents(st)
        base = dram + st.bt * p.n_rows * p.n_cols
        return [MemInsn(OP_STORE, MEM_OUT, sram, base + st.rt * t.rows * p.n_cols + st.ct * t.cols,
                        rows, cols, p.n_cols)]


@lru_cache(maxsize=256)
def _hazard(cols: int, reds: int, rows: int) -> bool:
    """The matrix GEMM's hazard depends on the tile shape alone; a plan has a few shapes."""
    return gemm_hazard(np.arange(cols), reds, rows, 0, cols)


def code_form(plan: Plan):
    """The address arithmetic of the plan's layout form."""
    if plan.embedding.form == "direct":
        return DirectForm(plan)
    return MatrixForm(plan)


def element_maps(plan: Plan) -> dict[str, np.ndarray]:
    """The packed layouts; they depend on the embedding only, not on the tiling."""
    if plan.embedding.form == "direct":
        return direct_element_maps(plan.embedding)
    return {name: element_map(plan.embedding, name) for name in ("inp", "wgt", "acc")}


class UopOverflow(Exception):
    """The plan's micro-op kernels do not fit the UOP buffer; the planner tries another."""


def generate(plan: Plan, epilogue: Epilogue, maps: dict[str, np.ndarray] | None = None) -> Program:
    emb = plan.embedding
    cfg = emb.accelerator.config
    t = plan.tiling
    form = code_form(plan)
    maps = maps if maps is not None else element_maps(plan)
    steps = plan_steps(plan)
    n_tiles = steps[-1].acc_tile + 1

    # DRAM regions; the uop region's size is known only after generation, so it goes last.
    regions: dict[str, Region] = {}
    offset = 0
    for name, mem in (("inp", MEM_INP), ("wgt", MEM_WGT), ("out", MEM_OUT), ("uop", MEM_UOP)):
        # LOAD/STORE address DRAM in elements, so a region must start on a multiple of its
        # element size; that is larger than a page for wide variants (a 16x512 WGT element is 8 KiB).
        offset = _round_up(offset, max(PAGE, cfg.elem_bytes(mem)))
        if name == "uop":
            break
        size = int(maps["acc" if name == "out" else name].size)
        regions[name] = Region(offset, size, cfg.elem_bytes(mem))
        offset += size
    inp_size, wgt_size, acc_size = form.slot_elems
    inp_base = [k * inp_size for k in range(t.inp_slots)]
    wgt_base = [k * wgt_size for k in range(t.wgt_slots)]
    acc_base = [k * acc_size for k in range(t.acc_slots)]

    kernels = Kernels()
    stream: list[tuple[str, Insn]] = []
    events = [s for s, st in enumerate(steps) if st.frees]  # g2l tokens, in push order
    popped = 0  # g2l tokens the load module has consumed
    uop_depth = cfg.depth(MEM_UOP)

    for st in steps:
        # ---- load module
        loads: list[Insn] = []
        if st.load_inp:
            loads += form.load_inp(st, inp_base[st.inp_slot], regions["inp"].base)
        if st.load_wgt:
            loads += form.load_wgt(st, wgt_base[st.wgt_slot], regions["wgt"].base)
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
        a0, i0, w0 = acc_base[st.acc_slot], inp_base[st.inp_slot], wgt_base[st.wgt_slot]
        work = work_insns(form, st, a0, i0, w0, kernels, epilogue)
        if len(kernels.dst) > uop_depth:
            raise UopOverflow(f"{len(kernels.dst)} micro-ops exceed the UOP buffer's {uop_depth}")
        waits_store = st.first and st.acc_tile >= t.acc_slots
        work[0] = replace(work[0], deps=replace(work[0].deps, pop_prev=bool(loads), pop_next=waits_store))
        work[-1] = replace(work[-1], deps=replace(work[-1].deps, push_prev=st.frees, push_next=st.last))
        stream += [(COMPUTE, i) for i in work]

        # ---- store module
        if st.last:
            tile = st.acc_tile
            frees_acc = tile + t.acc_slots < n_tiles or tile == n_tiles - 1
            stores: list[Insn] = form.store(st, acc_base[st.acc_slot], regions["out"].base)
            stores[0] = replace(stores[0], deps=Deps(pop_prev=True))
            stores[-1] = replace(stores[-1], deps=replace(stores[-1].deps, push_prev=frees_acc))
            stream += [(STORE, i) for i in stores]

    assert popped == len(events), "a g2l token was never consumed"
    uops = encode_uops(np.array(kernels.dst), np.array(kernels.src), np.array(kernels.wgt), cfg)
    regions["uop"] = Region(offset, int(uops.size) * 4, cfg.uop_elem_bytes)
    uop_load = MemInsn(OP_LOAD, MEM_UOP, 0, regions["uop"].base, 1, int(uops.size), int(uops.size))
    insns = [uop_load] + [_squeeze(i) for _, i in stream]
    insns.append(_nop(COMPUTE, Deps(pop_next=True)))  # the last STORE's token
    insns.append(FinishInsn())
    tensors = {name: emb.bound[name] for name in ("inp", "wgt", "acc")}
    return Program(cfg, tuple(insns), uops, regions, maps, tensors)


def work_insns(form, st: Step, a0: int, i0: int, w0: int, kernels: Kernels, epilogue: Epilogue) -> list[Insn]:
    """A step's compute group, without tokens: [reset GEMM if first] GEMM(s) [epilogue ALUs if last]."""
    work: list[Insn] = []
    rows, cols = form.acc_shape(st)
    if st.first:
        bgn, end = kernels.get(("reset", a0), lambda: [(a0, 0, 0)])
        work.append(GemmInsn(True, bgn, end, rows, cols, dst_factor_out=cols, dst_factor_in=1))
    work += form.gemm(st, a0, i0, w0, kernels)
    if st.last and epilogue.kind in ("requant", "saturate"):
        bgn, end = kernels.get(("alu", a0), lambda: [(a0, a0, 0)])
        # saturate is the clip alone; requant shifts first (SHR is an arithmetic shift: floor).
        shift = [(ALU_SHR, epilogue.shift)] if epilogue.kind == "requant" else []
        for opcode, imm in (*shift, (ALU_MIN, 127), (ALU_MAX, -128)):
            work.append(AluInsn(opcode, bgn, end, rows, cols, dst_factor_out=cols,
                                dst_factor_in=1, src_factor_out=cols, src_factor_in=1,
                                use_imm=True, imm=imm))
    return work


def _squeeze(insn: Insn) -> Insn:
    """Zero the factors of a loop that runs once: they never move an index, and a tiny
    buffer's factor field may be too narrow for them (an ACC of depth 2 has 1-bit factors)."""
    if not isinstance(insn, (GemmInsn, AluInsn)):
        return insn
    zero = {}
    for loop in ("out", "in"):
        if getattr(insn, f"iter_{loop}") <= 1:
            zero.update({f.name: 0 for f in fields(insn) if f.name.endswith(f"_factor_{loop}")})
    return replace(insn, **zero)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


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
    """layout.npz: where each tensor element lives in dram.bin (docs/bundle-format.md)."""
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
