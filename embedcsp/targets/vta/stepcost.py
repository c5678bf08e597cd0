"""The cycle model at tile-step granularity: what `timing.simulate` would say of the program
`codegen.generate` emits for a plan, without generating it.

The planner needs the modelled cycles of every candidate plan of every candidate embedding,
and generating a large program takes seconds. But a program is regular: per tile step a
load group, a compute group and perhaps a store group (codegen's module docstring), each a
run of instructions in one module whose first pops the tokens the group waits for and whose
last pushes the tokens it gives. Within a group only the sum of the instruction costs
matters, and those sums depend on the step's tile shape and flags, not on its addresses, so
they are computed once per distinct (shape, slots, flags) through the layout form's own
instruction builders and the cycle model's own `cost`. What remains is the token recurrence
of `simulate`, one step at a time.

tests/test_stepcost.py checks that this equals `simulate(generate(plan))` exactly, over
matrix and direct forms, batches, epilogues, single and double buffering and variants.
"""

from __future__ import annotations

from embedcsp.reference import Epilogue
from embedcsp.targets.vta.codegen import UopOverflow, code_form, work_insns
from embedcsp.targets.vta.config import MEM_UOP
from embedcsp.targets.vta.encoding import OP_LOAD, MemInsn
from embedcsp.targets.vta.plan import Plan
from embedcsp.targets.vta.steps import Kernels, plan_steps
from embedcsp.targets.vta.timing import Board, cost


def plan_cycles(plan: Plan, epilogue: Epilogue, b: Board) -> int:
    """Modelled cycles of `generate(plan, epilogue)` on board `b`; UopOverflow where generate
    would raise it."""
    cfg = plan.embedding.accelerator.config
    t = plan.tiling
    form = code_form(plan)
    steps = plan_steps(plan)
    n_tiles = steps[-1].acc_tile + 1
    inp_size, wgt_size, acc_size = form.slot_elems
    kernels = Kernels()
    uop_depth = cfg.depth(MEM_UOP)
    key_of = getattr(form, "cost_key", None)  # forms whose costs depend on the shape alone
    groups: dict[tuple, tuple[int, int, int]] = {}

    def group_costs(st) -> tuple[int, int, int]:
        """(load, compute, store) cycles of a step's instruction groups."""
        slots = (st.inp_slot, st.wgt_slot, st.acc_slot)
        key = None
        if key_of is not None:
            key = (key_of(st), slots, st.first, st.last, st.load_inp, st.load_wgt)
            if key in groups:
                return groups[key]
        i0, w0, a0 = st.inp_slot * inp_size, st.wgt_slot * wgt_size, st.acc_slot * acc_size
        loads = (form.load_inp(st, i0, 0) if st.load_inp else []) + (form.load_wgt(st, w0, 0) if st.load_wgt else [])
        work = work_insns(form, st, a0, i0, w0, kernels, epilogue)
        if len(kernels.dst) > uop_depth:
            raise UopOverflow(f"{len(kernels.dst)} micro-ops exceed the UOP buffer's {uop_depth}")
        stores = form.store(st, a0, 0) if st.last else []
        costs = tuple(sum(cost(i, cfg, b) for i in group) for group in (loads, work, stores))
        if key is not None:
            groups[key] = costs
        return costs

    issue = b.issue
    free_l = free_s = 0
    g2l: list[int] = []  # push times of each queue, popped in order
    s2g: list[int] = []
    g2l_popped = s2g_popped = 0
    events = [s for s, st in enumerate(steps) if st.frees]
    per_step = [group_costs(st) for st in steps]  # first, so the kernels are all known
    # The program's first instruction loads every micro-op into the UOP buffer (compute module).
    n_uops = len(kernels.dst)
    free_c = cost_uop_load(n_uops, cfg, b)
    for s, st in enumerate(steps):
        load, work, store = per_step[s]
        l2g = None
        if st.load_inp or st.load_wgt:
            pops = 0
            while g2l_popped + pops < len(events) and events[g2l_popped + pops] <= st.needs_free:
                pops += 1
            for _ in range(max(pops - 1, 0)):  # token-only NOPs, each waiting for its own token
                free_l = max(free_l, g2l[g2l_popped]) + issue
                g2l_popped += 1
            start = free_l
            if pops:
                start = max(start, g2l[g2l_popped])
                g2l_popped += 1
            free_l = l2g = start + load
        start = free_c if l2g is None else max(free_c, l2g)
        if st.first and st.acc_tile >= t.acc_slots:
            start = max(start, s2g[s2g_popped])
            s2g_popped += 1
        free_c = start + work
        if st.frees:
            g2l.append(free_c)
        if st.last:
            free_s = max(free_s, free_c) + store
            tile = st.acc_tile
            if tile + t.acc_slots < n_tiles or tile == n_tiles - 1:
                s2g.append(free_s)
    # A compute NOP pops the last STORE's token, then FINISH.
    free_c = max(free_c, s2g[s2g_popped]) + issue
    finish = free_c + issue
    return max(finish, free_l, free_s)


def cost_uop_load(n_uops: int, cfg, b: Board) -> int:
    """The program's first instruction: LOAD of every micro-op word into the UOP buffer."""
    return cost(MemInsn(OP_LOAD, MEM_UOP, 0, 0, 1, n_uops, n_uops), cfg, b)
