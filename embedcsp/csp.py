"""The embedding CSP, solved with OR-Tools CP-SAT.

Variables
  bind[q][t]   pattern input operand q reads operator input tensor t
  lane[d][p]   operator dim d is fused onto the lanes of pattern dim p, whose class
               is row (output and first input), col (output and second input),
               red (both inputs) or bat (all three); VTA: b, o, i = BATCH,
               BLOCK_OUT, BLOCK_IN; otherwise d is a translation loop of the
               instruction along the class axis of the operands it indexes
  form_on[f]   the layout form f that the family offers holds (else the packed matrix)
Constraints (the scalar dataflow, stated per dim)
  - pattern nodes that differ only along a pattern dim share every operand that
    lacks that dim, so the operator dims fused onto that pattern dim must not
    index the tensor bound to such an operand;
  - distinct accumulator lanes must hold distinct output elements, so dims on
    row/col lanes must index the output on their own (no p*s+r style mixing);
  - the instruction covers every operator MAC exactly once, which the mixed
    radix fusing and translations give by construction.
Objective (lexicographic, one CP-SAT solve per level)
  1. padded MACs = prod over pattern dims of ceil(fused/lanes)*lanes x loops;
  2. bytes of the packed operands in DRAM (padding and im2col duplication);
     this is where a form without duplication (VTA's direct conv form) wins
     when it costs no lanes;
  3. a fixed order over the remaining ties, so the answer does not depend on
     the solver's search.
Always a time limit; one worker and a fixed seed make the result reproducible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from embedcsp.accelerator import Accelerator
from embedcsp.embedding import CLASSES, Embedding, LaneGroup, Loop
from embedcsp.errors import BadInput, NoEmbedding, SolverTimeout
from embedcsp.operator import Operator
from embedcsp.targets.registry import family

ROLES = ("row", "col", "red")  # the classes every embedding has (embedding.CLASSES adds bat)
CP_SAT_MAX = 2**62  # CP-SAT integer domains are int64


@dataclass(frozen=True)
class SolveReport:
    status: str  # "OPTIMAL" or "FEASIBLE"
    objective: int  # padded MACs of the chosen embedding
    bound: int  # the solver's proven lower bound on padded MACs
    seconds: float
    levels: tuple[tuple[str, str, int, int], ...] = field(default=())  # (name, status, value, bound)

    def as_dict(self) -> dict:
        return {
            "status": self.status, "objective": self.objective, "bound": self.bound,
            "seconds": round(self.seconds, 4),
            "levels": [{"name": n, "status": s, "value": v, "bound": b} for n, s, v, b in self.levels],
        }


def _precheck(op: Operator, acc: Accelerator) -> None:
    """Structural reasons an embedding cannot exist, said in the user's terms."""
    if len(op.inputs) != 2:
        raise NoEmbedding(
            f"{op.kind} has {len(op.inputs)} input tensor(s); the instruction "
            f"'{acc.pattern.statement()}' multiplies exactly two"
        )
    for d in op.dims:
        users = [t.name for t in op.tensors if d.name in t.dims]
        if len(users) < 2:
            raise NoEmbedding(
                f"operator dim {d.name} is used by {len(users)} tensor(s) ({', '.join(users) or 'none'}); "
                "the instruction can only map dims that index at least two of its three operands"
            )


def _batched(op: Operator) -> set[str]:
    """Operator dims that index all three tensors (a batch, a group): lanes of a batched
    instruction dim, or loops along the batch axis."""
    return {d.name for d in op.dims if all(d.name in t.dims for t in op.tensors)}


def _output_separable(op: Operator) -> set[str]:
    """Dims whose lanes stay on distinct output elements: each output index that uses the dim
    is it with coefficient +-1 plus, at most, terms in multiples of its extent (the low digit
    of a mixed radix, as a banded placement's B*q_tile + q_out). Such a term's own dim has a
    coefficient other than +-1 (or the dim has extent 1), so it is never on those lanes too."""
    ext = op.extents
    out = set()
    for d in ext:
        uses = [dict((e, c) for e, c in ix.terms if c) for ix in op.output.access if d in ix.dims]
        if uses and all(abs(t[d]) == 1 and all(c % ext[d] == 0 for e, c in t.items() if e != d)
                        for t in uses):
            out.add(d)
    return out


class _Model:
    """CP-SAT variables and expressions for one (operator, accelerator) pair."""

    def __init__(self, op: Operator, acc: Accelerator, forms: tuple):
        self.op, self.acc, self.forms = op, acc, forms
        m = self.m = cp_model.CpModel()
        pattern = acc.pattern
        # The pattern's own operand names and dims. Its dims in class order (row, col, red,
        # bat), then statement order: the order of the Embedding's groups and of tie-breaks.
        self.first = pattern.inputs[0].name  # the operand that shares the row dims with the output
        role_of = acc.role_of
        self.pdims = tuple(sorted(pattern.dim_names, key=lambda p: CLASSES.index(role_of[p])))
        self.role_of = role_of
        self.batched = _batched(op)
        # The lane classes of this embedding: row, col and red always (one lane where the
        # pattern lacks one: a matrix-vector unit has no col dim), bat where the pattern
        # or the operator has a dim in all three operands.
        self.classes = ROLES + (("bat",) if self.batched or "bat" in role_of.values() else ())
        self.dim_of = {r: [p for p in self.pdims if role_of[p] == r] for r in self.classes}
        inputs = [t.name for t in op.inputs]
        # bind[q][t]: a permutation of the two operator inputs onto the pattern's two inputs.
        self.bind = {q.name: {t: m.new_bool_var(f"bind_{q.name}_{t}") for t in inputs} for q in pattern.inputs}
        for q in pattern.inputs:
            m.add_exactly_one(self.bind[q.name].values())
        for t in inputs:
            m.add_exactly_one(self.bind[q.name][t] for q in pattern.inputs)
        # lane[d][p] or loop.
        self.lane = {d.name: {p: m.new_bool_var(f"lane_{d.name}_{p}") for p in self.pdims} for d in op.dims}
        self.loop = {d.name: m.new_bool_var(f"loop_{d.name}") for d in op.dims}
        for d in op.dims:
            m.add_exactly_one([*self.lane[d.name].values(), self.loop[d.name]])
        self._dataflow()
        self._form()
        self._costs()

    def role_lane(self, d: str, role: str):
        """lane[d][p] for the one pattern dim p of a class (what a family's form constrains,
        e.g. VTA's direct form on BLOCK_IN); constant 0 where the class has no dim."""
        dims = self.dim_of.get(role, [])
        if not dims:
            return self.m.new_constant(0)
        if len(dims) > 1:
            raise ValueError(f"class {role} has several pattern dims ({', '.join(dims)})")
        return self.lane[d][dims[0]]

    def pin(self, pins: Pins) -> None:
        if pins.form:
            if pins.form != "matrix" and pins.form not in self.form_on:
                raise NoEmbedding(f"the {pins.form} layout form does not apply to {self.op.describe()}")
            for name, on in self.form_on.items():
                self.m.add(on == int(pins.form == name))
        for operand, tensor in pins.binding:
            self.m.add(self.bind[operand][tensor] == 1)
        for dim, place in pins.roles:
            if place == "loop":
                self.m.add(self.loop[dim] == 1)
            elif place in self.lane[dim]:
                self.m.add(self.lane[dim][place] == 1)
            elif len(self.dim_of.get(place, [])) == 1:
                self.m.add(self.lane[dim][self.dim_of[place][0]] == 1)
            else:
                raise NoEmbedding(f"a pin puts {dim} on {place}, which is not one lane of "
                                  f"'{self.acc.pattern.statement()}'")

    def exclude(self, emb: Embedding) -> None:
        """Forbid `emb` and every embedding that differs from it only in where dims of extent 1
        go (they move no element), so an enumeration finds genuinely other ones."""
        ext, lanes = self.op.extents, self.acc.pattern.extents
        wide = [p for p in self.pdims if lanes[p] > 1]
        clause = [self.bind[q][t].Not() for q, t in emb.binding if q in self.bind]
        for g in emb.groups:
            for d in g.dims:
                if ext[d] > 1 and g.lane in wide:
                    clause.append(self.lane[d][g.lane].Not())
        # A dim on a lane of extent 1 walks like a loop: either differs only if it goes wide.
        narrow = [d for g in emb.groups if g.lane not in wide for d in g.dims]
        for d in narrow + [lp.dim for lp in emb.loops]:
            if ext[d] > 1:
                clause += [self.lane[d][p] for p in wide]
        if emb.form in self.form_on:
            clause.append(self.form_on[emb.form].Not())
        else:
            clause += list(self.form_on.values())
        self.m.add_bool_or(clause)

    def _dataflow(self) -> None:
        m, op, pattern = self.m, self.op, self.acc.pattern
        separable = _output_separable(op)
        for d in op.dims:
            for pdim in self.pdims:
                var = self.lane[d.name][pdim]
                for operand in pattern.operands:
                    if pdim in operand.dims:
                        continue
                    # Nodes differing along pdim share this operand's element.
                    if operand is pattern.output:
                        if d.name in op.output.dims:
                            m.add(var == 0)
                        continue
                    for t, b in self.bind[operand.name].items():
                        if d.name in op.tensor(t).dims:
                            m.add_bool_or([var.Not(), b.Not()])
                if pdim in pattern.output.dims and d.name not in separable:
                    m.add(var == 0)

    def _form(self) -> None:
        """Layout forms besides the packed matrix, each offered by the family (docs/targets.md):
        a form that applies gets a boolean; when it is on, its own constraints hold and it
        states the bytes of the first operand in DRAM."""
        self.form_on: dict[str, cp_model.IntVar] = {}
        for form in self.forms:
            if form.unsupported(self.op) is None:
                on = self.form_on[form.name] = self.m.new_bool_var(f"form_{form.name}")
                form.constrain(self, on)
        if self.form_on:
            self.m.add(sum(self.form_on.values()) <= 1)

    def _product(self, name: str, factors: list[tuple[cp_model.IntVar, int]]) -> cp_model.IntVar:
        """prod(ext if flag else 1), as an integer variable."""
        m = self.m
        upper = 1
        terms = []
        for flag, ext in factors:
            upper *= ext
            if ext == 1:
                continue
            f = m.new_int_var(1, ext, f"{name}_f{len(terms)}")
            m.add(f == 1 + (ext - 1) * flag)
            terms.append(f)
        if not terms:
            return m.new_constant(1)
        if len(terms) == 1:
            return terms[0]
        prod = m.new_int_var(1, upper, name)
        m.add_multiplication_equality(prod, terms)
        return prod

    def _mul(self, name: str, a: cp_model.IntVar, b: cp_model.IntVar, upper: int) -> cp_model.IntVar:
        v = self.m.new_int_var(0, upper, name)
        self.m.add_multiplication_equality(v, [a, b])
        return v

    def _costs(self) -> None:
        m, op = self.m, self.op
        ext = op.extents
        total = op.macs
        # Every product below is at most the padded MACs, which the lane rounding bounds by
        # MACs x instruction MACs (solve_embedding checks that this fits CP-SAT's int64).
        big = total * self.acc.pattern.macs
        extents = self.acc.pattern.extents
        self.padded: dict[str, cp_model.IntVar] = {}
        for p in self.pdims:
            fused = self._product(f"fused_{p}", [(self.lane[d][p], ext[d]) for d in ext])
            lanes = extents[p]
            chunks = m.new_int_var(1, total, f"chunks_{p}")
            m.add_division_equality(chunks, fused + (lanes - 1), lanes)
            padded = m.new_int_var(1, total * lanes, f"padded_{p}")
            m.add(padded == chunks * lanes)
            self.padded[p] = padded
        # Translation loops per class axis; whether an output dim is a row or a col loop
        # depends on which input the binding gives the first operand.
        inp_t = self.bind[self.first]
        out_dims = op.output.dims
        axis_flags: dict[str, list[tuple[cp_model.IntVar, int]]] = {r: [] for r in self.classes}
        for d in ext:
            if d in self.batched:
                axis_flags["bat"].append((self.loop[d], ext[d]))
            elif d not in out_dims:
                axis_flags["red"].append((self.loop[d], ext[d]))
            else:
                for t, b in inp_t.items():
                    # d is a row loop when it indexes the tensor bound to the first input, else a col loop.
                    flag = m.new_bool_var(f"loop_{d}_via_{t}")
                    m.add_multiplication_equality(flag, [self.loop[d], b])
                    role = "row" if d in op.tensor(t).dims else "col"
                    axis_flags[role].append((flag, ext[d]))
        self.loop_prod = {r: self._product(f"loops_{r}", axis_flags[r]) for r in self.classes}
        # The extent of each class axis in lanes: its loops x its pattern dims' padded extents.
        self.axis = {}
        for r in self.classes:
            value = self.loop_prod[r]
            for p in self.dim_of[r]:
                value = self._mul(f"axis_{r}_{p}", value, self.padded[p], big)
            self.axis[r] = value
        rc = self._mul("rows_x_cols", self.axis["row"], self.axis["col"], big)
        batch = self.axis.get("bat")
        if batch is not None:
            rc = self._mul("rows_x_cols_x_bat", rc, batch, big)
        self.padded_macs = self._mul("padded_macs", rc, self.axis["red"], big)
        # Bytes of the packed operands (int8 each): first input rows x red, second input
        # cols x red, output rows x cols, each times the batch axis where there is one.
        self.packed_bytes = m.new_int_var(0, 3 * big, "packed_bytes")
        rr = self._mul("inp_matrix_bytes", self.axis["row"], self.axis["red"], big)
        cr = self._mul("wgt_bytes", self.axis["col"], self.axis["red"], big)
        if batch is not None:
            rr = self._mul("inp_matrix_bytes_bat", rr, batch, big)
            cr = self._mul("wgt_bytes_bat", cr, batch, big)
        inp_bytes = m.new_int_var(0, big, "inp_bytes")
        packed = [on.Not() for on in self.form_on.values()]  # the matrix form: rows x red
        m.add(inp_bytes == rr).only_enforce_if(packed)
        forms = {f.name: f for f in self.forms}
        for name, on in self.form_on.items():
            forms[name].first_operand_bytes(self, on, inp_bytes)
        m.add(self.packed_bytes == inp_bytes + cr + rc)
        # A total order for the remaining ties: prefer lanes of the later classes (reduction,
        # then col, then row), on the dims the operator lists last, and the first input on
        # the operator's first input.
        weight = 1
        terms = []
        for d in reversed(list(ext)):
            for p in reversed(self.pdims):
                terms.append(weight * self.lane[d][p])
                weight *= 2
        first = op.inputs[0].name
        terms.append(weight * self.bind[self.first][first].Not())
        # On a tie in bytes the packed matrix wins: one LOAD per tile instead of one per channel block.
        terms.append(2 * weight * sum(self.form_on.values()))
        self.tie_break = sum(terms)

    def embedding(self, solver: cp_model.CpSolver) -> Embedding:
        op, ext = self.op, self.op.extents
        binding = [(q, next(t for t, b in self.bind[q].items() if solver.value(b))) for q in self.bind]
        binding.append((self.acc.pattern.output.name, op.output.name))
        extents = self.acc.pattern.extents
        groups = []
        for r in self.classes:
            if not self.dim_of[r]:
                groups.append(LaneGroup(r, 1, (), (), ""))  # the instruction has no such lane
            for p in self.dim_of[r]:
                dims = tuple(d for d in ext if solver.value(self.lane[d][p]))
                groups.append(LaneGroup(r, extents[p], dims, tuple(ext[d] for d in dims), p))
        inp = op.tensor(dict(binding)[self.first])
        loops = []
        for d in ext:
            if not solver.value(self.loop[d]):
                continue
            if d in self.batched:
                role = "bat"
            elif d not in op.output.dims:
                role = "red"
            else:
                role = "row" if d in inp.dims else "col"
            loops.append(Loop(d, ext[d], role))
        form = next((name for name, on in self.form_on.items() if solver.value(on)), "matrix")
        return Embedding(op, self.acc, tuple(binding), tuple(groups), tuple(loops), form)


@dataclass(frozen=True)
class Pins:
    """Choices fixed before solving: operand binding, dim -> its place (a pattern dim, a lane
    class with one pattern dim: 'row', 'col', 'red', 'bat', or 'loop'), and the layout form
    ('matrix' or a family's form such as VTA's 'direct'; '' leaves it to the solver)."""

    binding: tuple[tuple[str, str], ...] = ()
    roles: tuple[tuple[str, str], ...] = ()
    form: str = ""


def solve_embedding(op: Operator, acc: Accelerator, time_limit: float = 10.0, seed: int = 0,
                    pins: Pins = Pins(), forms: tuple | None = None,
                    exclude: tuple[Embedding, ...] = (), max_padded_macs: int | None = None,
                    ) -> tuple[Embedding, SolveReport]:
    """Find the best embedding of the accelerator's instruction into the operator.

    `forms` are the layout forms besides the packed matrix that the accelerator's
    family can generate code for (VTA: the direct conv form, targets/vta/forms.py);
    None asks the family (targets/registry.py), () allows the matrix form alone.
    `exclude` and `max_padded_macs` serve `solve_alternatives`: the best embedding other
    than those, within that many padded MACs (NoEmbedding when there is none).
    """
    if time_limit <= 0:
        raise ValueError("time_limit must be positive")
    _precheck(op, acc)
    lanes = acc.pattern.macs
    if op.macs * lanes**2 > CP_SAT_MAX:
        raise BadInput(f"{op.describe()} ({op.macs:.3g} MACs) on an instruction of {lanes} MACs is too "
                       "large for the solver's 64-bit cost model, which needs MACs x (instruction "
                       "MACs)^2 below 2^62")
    start = time.perf_counter()
    if forms is None:
        forms = family(acc.family).forms
    model = _Model(op, acc, forms)
    model.pin(pins)
    for emb in exclude:
        model.exclude(emb)
    if max_padded_macs is not None:
        model.m.add(model.padded_macs <= max_padded_macs)
    levels: list[tuple[str, str, int, int]] = []
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = seed
    statuses = []
    best = None
    for name, objective in (("padded_macs", model.padded_macs), ("packed_bytes", model.packed_bytes),
                            ("tie_break", model.tie_break)):
        remaining = time_limit - (time.perf_counter() - start)
        if remaining <= 0.0:
            if not levels:
                raise SolverTimeout(
                    f"the time limit of {time_limit:g} s ran out while building the model of "
                    f"{op.describe()}; nothing was solved yet; raise --time-limit"
                )
            break  # keep what the earlier levels found; the report says FEASIBLE
        solver.parameters.max_time_in_seconds = remaining
        model.m.minimize(objective)
        status = solver.solve(model.m)
        if status == cp_model.INFEASIBLE and not levels:
            raise NoEmbedding(
                f"no way to map '{acc.pattern.statement()}' onto {op.describe()} preserves its dataflow"
            )
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            if status != cp_model.UNKNOWN:  # a fixed level cannot make the model infeasible
                raise RuntimeError(f"CP-SAT answered {solver.status_name(status)} at level {name}")
            if not levels:
                raise SolverTimeout(
                    f"the solver found no embedding of {op.describe()} within {time_limit:g} s; "
                    "raise --time-limit"
                )
            break  # out of time: keep what the earlier levels found
        value = int(solver.value(objective))  # exact, unlike the float objective_value
        bound = round(solver.best_objective_bound)
        levels.append((name, solver.status_name(status), value, bound))
        statuses.append(status)
        best = model.embedding(solver)
        model.m.add(objective <= value)  # fix this level before optimising the next
        if status != cp_model.OPTIMAL:
            break
    assert best is not None
    status = "OPTIMAL" if all(s == cp_model.OPTIMAL for s in statuses) and len(levels) == 3 else "FEASIBLE"
    report = SolveReport(status=status, objective=levels[0][2], bound=levels[0][3],
                         seconds=time.perf_counter() - start, levels=tuple(levels))
    return best, report


def solve_alternatives(op: Operator, acc: Accelerator, best: Embedding, report: SolveReport,
                       count: int, slack: float, time_limit: float, seed: int = 0,
                       pins: Pins = Pins()) -> list[tuple[Embedding, SolveReport]]:
    """Up to `count` embeddings besides `best`, each the lexicographic best (padding, bytes,
    tie-break) of what is left, all within (1 + slack) x the best padded MACs: the candidates
    among which the family's cycle model decides. Each solve gets `time_limit`; an enumeration
    that runs out of time or of embeddings stops there."""
    found = [best]
    cap = int(report.objective * (1 + slack))
    out: list[tuple[Embedding, SolveReport]] = []
    for _ in range(count):
        try:
            emb, rep = solve_embedding(op, acc, time_limit, seed, pins, exclude=tuple(found),
                                       max_padded_macs=cap)
        except (NoEmbedding, SolverTimeout):
            break
        found.append(emb)
        out.append((emb, rep))
    return out
