"""The DeepBench harness behind `embedcsp bench`: our embedding against VTA's fixed TVM mapping.

Every operator is compiled twice through the same tiler, code generator and
cycle model, once with the solver's embedding (`csp`) and once with VTA's
fixed mapping (`reference`); both programs are verified bit-exact before any
speedup is reported. Pure parts: `evaluate` (one row), `summarize`,
`summary_lines`. I/O: `write_csv`, `write_json`, `write_markdown`,
`write_plot`, and `run`, which ties them together behind a progress bar.

Nothing silently lost. A run writes four files `<stem>.csv/.json/.md/.png`
into `--out`, and the stem names the selection of operators:

- a whole suite (no names given): `deepbench_<suite>`, titled "DeepBench <suite>";
  on any accelerator but the default VTA the stem starts with its name and `_`
  (`gemmini_deepbench_all`), and titles end "on <accelerator>";
- named operators (`--only` or plain arguments): `deepbench_subset-<h>`, where
  `<h>` is the first 8 hex digits of the sha256 of the sorted, canonical names
  joined by commas, titled "DeepBench subset (N operators: ...)". The order
  and spelling of the names do not change `<h>`.

The JSON records the `selection` (suite or subset, the operators, the
accelerator's name and `Accelerator.digest`, the board, the seed) and the
`run` (embedcsp version, time limit, ISA file, jobs). Two runs are the same
selection when the suite (for a suite run) or the sorted operator names (for a
subset), the accelerator digest, the board and the seed agree; version and
time limit are provenance, not identity, so a newer embedcsp may refresh a
result set.

Before any work `run` looks at the four files of its stem. None there: it
writes them. A JSON recording the same selection: the fresh results replace
all four. Anything else, that is a JSON of another selection, a JSON that
records no selection (written before selections were recorded, or by hand),
an unreadable JSON, or one of the four files without its JSON: `BadInput`
(exit 2), naming the file and the difference, and nothing is computed; remove
the files or choose another `--out`. If such a file appears while the run
works (another run finished first), the results go to the first free
`<stem>-2`, `<stem>-3`, ... instead and `BenchResult.note` says so. Each file
is written to a temporary name and renamed into place, so an interrupted run
leaves the previous set whole.

Every row is stored as soon as its operator finishes, in the results store
(`bench_store`, SQLite, default `<out>/results.sqlite`), keyed by the operator
and everything that can change its row: the accelerator digest, the board,
the seed, the time limit and the embedcsp version. A run takes the rows the
store already has and computes only the others, so an interrupted run resumes
where it stopped and a rerun of finished work computes nothing; `fresh`
recomputes all and replaces the stored rows. Rows that say nothing about the
operator (an internal error, a worker that died) are reported, not stored.
The four files are written from the store's rows, so they are the same
whichever run computed each row. The operators run on an engine
(`bench_engines`): `local` worker processes or `ray` tasks, with the same rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

from embedcsp import deepbench, networks
from embedcsp.__about__ import __version__
from embedcsp.accelerator import load_accelerator
from embedcsp.bench_engines import EngineSpec, run_tasks
from embedcsp.bench_store import RunKey, Store, code_version, open_store
from embedcsp.embedding import Embedding
from embedcsp.errors import BadInput, EmbedcspError
from embedcsp.operator import Operator
from embedcsp.pipeline import (
    Options,
    Outcome,
    check_seed,
    check_time_limit,
    compile_operator,
    verify_and_cost,
)
from embedcsp.targets.registry import family

COLUMNS = [
    "name", "kind", "M", "N", "K", "C", "H", "W", "R", "S", "pad", "stride", "dims",
    "status", "objective", "bound", "solve_s", "padding_efficiency", "embedding", "gemm_uops",
    "dram_load_bytes", "dram_store_bytes", "instructions", "host_packed_bytes", "duplication",
    "cycles", "roofline_cycles", "roofline_efficiency", "verified", "verify_s", "error",
    "ref_padding_efficiency", "ref_cycles", "ref_roofline_efficiency", "ref_verified", "ref_padded",
    "ref_error", "ref_same_program", "speedup", "board",
]
SUITES = ("gemm", "conv", "all", *networks.NETWORKS)  # DeepBench, then the network suites
LOW_UTILIZATION = 0.5  # the reference issues more than twice the useful MACs below this
STORE_NAME = "results.sqlite"  # the results store's file in --out, unless --store names another
TRANSIENT = ("internal error:", "worker failed:")  # errors of a row that is not stored


@dataclass(frozen=True)
class Case:
    """An operator with the name it goes by in rows and reports."""

    name: str
    operator: Operator


def deepbench_case(name: str) -> Case:
    """A DeepBench operator by name; unknown names raise BadInput with a hint."""
    p = deepbench.lookup(name)
    return Case(p.name, p.operator())


def case_for(name: str) -> Case:
    """A DeepBench operator or a network layer (``<network>.<layer>``) by name."""
    if networks.is_network_name(name):
        layer = networks.lookup(name)
        return Case(layer.name, layer.operator())
    return deepbench_case(name)


def canonical_name(name: str, suite: str) -> str:
    """The canonical name of an operator given on the command line; in a network suite a bare
    layer name (``C2``) means that network's layer."""
    if networks.is_network_name(name):
        return networks.lookup(name).name
    if suite in networks.NETWORKS and not deepbench_name(name):
        return networks.lookup(name, suite).name
    return deepbench.lookup(name).name


def deepbench_name(name: str) -> bool:
    return isinstance(name, str) and re.fullmatch(r"(gemm|conv)-\w+-\d+", name.strip().lower()) is not None


def names_for(suite: str) -> list[str]:
    """Operator names in suite order; duplicate conv rows are left out (solved once); a network's
    layers are its distinct shapes (each weighted by its count in the summary)."""
    if suite not in SUITES:
        raise BadInput(f"unknown suite {suite!r}: expected one of {', '.join(SUITES)}")
    if suite in networks.NETWORKS:
        return [layer.name for layer in networks.layers(suite)]
    problems: list = []
    if suite in ("gemm", "all"):
        problems += deepbench.gemm_problems()
    if suite in ("conv", "all"):
        problems += [p for p in deepbench.conv_problems() if p.dup_of is None]
    return [p.name for p in problems]


def shape_columns(op: Operator) -> dict:
    prm = op.param_dict
    if op.kind == "gemm":
        return {"kind": "gemm", "M": prm["M"], "N": prm["N"], "K": prm["K"]}
    if op.kind != "conv2d":  # an operator from a statement (bmm, grouped conv): its dim extents
        return {"kind": op.kind, "dims": " ".join(f"{d.name}={d.extent}" for d in op.dims)}
    return {"kind": op.kind, **{k: prm[k] for k in ("N", "C", "H", "W", "K", "R", "S")},
            "pad": f"{prm['pad_h']}x{prm['pad_w']}", "stride": f"{prm['stride_h']}x{prm['stride_w']}"}


def needs_hand_padding(emb: Embedding) -> bool:
    """True if TVM's VTA schedule could not take the shape as is: it requires the dims on the
    BLOCK_IN ("red") and BLOCK_OUT ("col") lanes to be multiples of the lane count."""
    return any(g.dims and g.fused % g.lanes for g in emb.groups if g.role in ("red", "col"))


def _ours(o: Outcome) -> dict:
    c, v = o.compiled, o.verification
    lanes = "; ".join(f"{g.role}<-{'x'.join(g.dims) or '-'}" for g in c.embedding.groups)
    if c.placement:
        lanes = f"{c.placement.name}: {lanes}"
    return {
        "status": c.report.status, "objective": c.report.objective, "bound": c.report.bound,
        "solve_s": round(c.report.seconds, 4), "padding_efficiency": round(c.efficiency, 6),
        "embedding": lanes, **family(c.accelerator.family).report.bench_columns(c, v),
        "host_packed_bytes": sum(t.packed_bytes for t in o.transforms),
        "duplication": round(max(t.duplication for t in o.transforms), 4),
        "cycles": o.timing.cycles, "roofline_cycles": o.roofline.cycles,
        "roofline_efficiency": round(o.roofline.efficiency(o.timing.cycles), 4),
        "verified": v.ok, "verify_s": round(v.seconds, 3), "error": v.first_mismatch or "",
    }


def _reference(o: Outcome) -> dict:
    c, v = o.compiled, o.verification
    return {
        "ref_padding_efficiency": round(c.efficiency, 6), "ref_cycles": o.timing.cycles,
        "ref_roofline_efficiency": round(o.roofline.efficiency(o.timing.cycles), 4),
        "ref_verified": v.ok, "ref_padded": needs_hand_padding(c.embedding), "ref_error": v.first_mismatch or "",
    }


def evaluate(target: str | Case | Operator, isa: str | Path | None = None, time_limit: float = 10.0,
             seed: int = 0, board: str | None = None) -> dict:
    """One row: both strategies compiled, verified and costed. Errors become part of the row,
    so one failing operator never hides the rest of a sweep."""
    case = (case_for(target) if isinstance(target, str)
            else target if isinstance(target, Case) else Case(target.describe(), target))
    acc = load_accelerator(isa)
    board = board or family(acc.family).default_board
    row: dict = {"name": case.name, **shape_columns(case.operator), "board": board}
    strategies = [("csp", _ours, "error"), ("reference", _reference, "ref_error")]
    if family(acc.family).reference is None:  # a family without a fixed mapping: ours alone
        strategies = strategies[:1]
    ours = None
    for strategy, columns, error_key in strategies:
        options = Options(strategy=strategy, board=board, time_limit=time_limit, seed=seed)
        try:
            compiled = compile_operator(case.operator, acc, options)
            # Where the cycle model chose the reference's own embedding, the two strategies
            # are one program: it is verified once (same_program_as says when).
            outcome = verify_and_cost(compiled, seed, same_program=ours)
            row.update(columns(outcome))
            if strategy == "csp":
                ours = outcome
            else:
                row["ref_same_program"] = ours is not None and outcome.verification is ours.verification
        except EmbedcspError as exc:
            row.update({"verified" if strategy == "csp" else "ref_verified": False, error_key: str(exc)})
    # A speedup only between two programs that both computed the right answer.
    if row["verified"] is True and row.get("ref_verified") is True:
        row["speedup"] = round(row["ref_cycles"] / row["cycles"], 6)
    return row


def row_ok(row: dict) -> bool:
    """Ours verified, and the reference too where the family has one (no row of such a family
    lacks `ref_verified`: a failure to compile it is recorded as False)."""
    return row.get("verified") is True and row.get("ref_verified") is not False


def _geomean(values: list[float]) -> float | None:
    return round(statistics.geometric_mean(values), 6) if values else None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def network_totals(rows: list[dict], counts: dict[str, int]) -> dict:
    """Whole-network modelled time: the sum over layers of cycles x count, ours and the reference's,
    over the layers both verified; None where some layer of the network lacks a verified program."""
    weighted = [r for r in rows if r["name"] in counts]
    both = [r for r in weighted if r.get("speedup") is not None]
    complete = len(both) == len(weighted)
    ours = sum(r["cycles"] * counts[r["name"]] for r in both)
    ref = sum(r["ref_cycles"] * counts[r["name"]] for r in both)
    return {
        "network_layers": sum(counts[r["name"]] for r in weighted),
        "network_distinct_layers": len(weighted),
        "network_layers_timed": sum(counts[r["name"]] for r in both),
        "network_cycles": ours if complete else None,
        "ref_network_cycles": ref if complete else None,
        "network_speedup": round(ref / ours, 6) if complete and ours else None,
    }


def summarize(rows: list[dict], wall_s: float | None = None, counts: dict[str, int] | None = None) -> dict:
    """Figures over a sweep's rows; every one is computed from the rows, none is assumed. With
    `counts` (a network suite's layer counts by name) also the whole-network modelled time."""
    ours = [r for r in rows if r.get("verified") is True]
    ref = [r for r in rows if r.get("ref_verified") is True]
    sped = [r for r in rows if r.get("speedup") is not None]
    low = [r for r in rows if r.get("ref_padding_efficiency") is not None
           and r["ref_padding_efficiency"] < LOW_UTILIZATION]
    low_sped = [r for r in low if r.get("speedup") is not None]
    best = max(sped, key=lambda r: r["speedup"], default=None)
    slowest = max(ours, key=lambda r: r["solve_s"], default=None)
    slowest_verify = max(ours, key=lambda r: r["verify_s"], default=None)
    return {
        "board": ", ".join(sorted({r["board"] for r in rows if r.get("board")})) or None,
        "reference": any("ref_verified" in r for r in rows),  # False: a family without one
        "operators": len(rows),
        "verified": sum(row_ok(r) for r in rows),
        "failed": [r["name"] for r in rows if not row_ok(r)],
        "ref_unavailable": [r["name"] for r in rows if r.get("ref_error") and "ref_cycles" not in r],
        "optimal": sum(r.get("status") == "OPTIMAL" for r in rows),
        "speedup_operators": len(sped),
        "geomean_speedup": _geomean([r["speedup"] for r in sped]),
        "low_utilization_threshold": LOW_UTILIZATION,
        "low_utilization_operators": len(low),
        "low_utilization_with_speedup": len(low_sped),
        "geomean_speedup_low_utilization": _geomean([r["speedup"] for r in low_sped]),
        "max_speedup": best["speedup"] if best else None,
        "max_speedup_operator": best["name"] if best else None,
        "roofline_operators": len(ours),
        "geomean_roofline_efficiency": _geomean([r["roofline_efficiency"] for r in ours]),
        "min_roofline_efficiency": min((r["roofline_efficiency"] for r in ours), default=None),
        "max_roofline_efficiency": max((r["roofline_efficiency"] for r in ours), default=None),
        "slower_than_reference": [r["name"] for r in sped if r["speedup"] < 1.0],
        "ref_roofline_operators": len(ref),
        "ref_geomean_roofline_efficiency": _geomean([r["ref_roofline_efficiency"] for r in ref]),
        "median_padding_efficiency": _median([r["padding_efficiency"] for r in ours]),
        "min_padding_efficiency": min((r["padding_efficiency"] for r in ours), default=None),
        "median_solve_s": _median([r["solve_s"] for r in ours]),
        "max_solve_s": slowest["solve_s"] if slowest else None,
        "slowest_solve": slowest["name"] if slowest else None,
        "median_verify_s": _median([r["verify_s"] for r in ours]),
        "max_verify_s": slowest_verify["verify_s"] if slowest_verify else None,
        "slowest_verify": slowest_verify["name"] if slowest_verify else None,
        "wall_s": None if wall_s is None else round(wall_s, 1),
        **(network_totals(rows, counts) if counts else {}),
    }


def _f(x: float | None, fmt: str, prefix: str = "") -> str:
    return "n/a" if x is None else prefix + format(x, fmt)


def summary_lines(s: dict, title: str = "DeepBench") -> list[str]:
    """The summary as the terminal and the markdown show it."""
    reference = s.get("reference", True)
    lines = [
        (f"{title} on {s['board'] or 'n/a'}: {s['operators']} operators, {s['verified']} verified bit-exact "
         + ("with both strategies" if reference else "(the family has no reference mapping)")
         + f", {s['optimal']} solved OPTIMAL"),
    ]
    if reference:
        lines += [
            (f"speedup over the reference mapping: geomean {_f(s['geomean_speedup'], '.3f', 'x')} over "
             f"{s['speedup_operators']} operators; largest {_f(s['max_speedup'], '.3f', 'x')} "
             f"({s['max_speedup_operator'] or 'n/a'}); slower than the reference: "
             + (", ".join(s.get("slower_than_reference") or []) or "none")),
            (f"where the reference keeps < {s['low_utilization_threshold']:.0%} of its MACs useful: "
             f"{s['low_utilization_operators']} operators, geomean speedup "
             f"{_f(s['geomean_speedup_low_utilization'], '.3f', 'x')} over the "
             f"{s['low_utilization_with_speedup']} with a speedup"),
        ]
    lines += [
        (f"roofline efficiency: geomean {_f(s['geomean_roofline_efficiency'], '.3f')} ours "
         f"({s['roofline_operators']} operators, min {_f(s.get('min_roofline_efficiency'), '.3f')}, "
         f"max {_f(s.get('max_roofline_efficiency'), '.3f')})"
         + (f", {_f(s['ref_geomean_roofline_efficiency'], '.3f')} reference ({s['ref_roofline_operators']} "
            "operators)" if reference else "")),
        (f"solve time: median {_f(s['median_solve_s'], '.3f')} s, max {_f(s['max_solve_s'], '.3f')} s "
         f"({s['slowest_solve'] or 'n/a'})"),
    ]
    if s.get("network_layers") is not None:
        if s["network_cycles"] is not None:
            lines.append(f"modelled network time ({s['network_layers']} layer runs of "
                         f"{s['network_distinct_layers']} distinct shapes, cycles x count): "
                         f"{s['network_cycles']} cycles ours, {s['ref_network_cycles']} "
                         f"reference, {_f(s['network_speedup'], '.3f')}x")
        else:
            lines.append(f"whole network ({s['network_layers']} layers): n/a, only {s['network_layers_timed']} "
                         "layers have both programs verified")
    if s["wall_s"] is not None:
        lines.append(f"wall time: {s['wall_s']:.1f} s")
    if s["ref_unavailable"]:
        lines.append(f"reference unavailable for {len(s['ref_unavailable'])}: {', '.join(s['ref_unavailable'])}")
    if s["failed"]:
        lines.append(f"FAILED ({len(s['failed'])}): {', '.join(s['failed'])}")
    return lines


# ---------------------------------------------------------------- writers


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})


def write_json(rows: list[dict], summary: dict, path: Path, selection: Selection | None = None,
               run: dict | None = None) -> None:
    head: dict = {}
    if selection is not None:
        head = {"format": FORMAT, "selection": selection.as_dict(), "run": run or {}}
    doc = {**head, "summary": summary, "columns": COLUMNS,
           "rows": [{k: row.get(k) for k in COLUMNS} for row in rows]}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _shape(row: dict) -> str:
    if row.get("kind") == "gemm":
        return f"M={row['M']} N={row['N']} K={row['K']}"
    if row.get("kind") != "conv2d" and row.get("dims"):
        return f"{row['kind']} {row['dims']}"
    return (" ".join(f"{k}={row[k]}" for k in ("N", "C", "H", "W", "K", "R", "S"))
            + f" pad={row['pad']} stride={row['stride']}")


_TABLE = [("operator", lambda r: r["name"]), ("shape", _shape),
          ("ref util", lambda r: _f(r.get("ref_padding_efficiency"), ".3f")),
          ("our util", lambda r: _f(r.get("padding_efficiency"), ".3f")),
          ("ref cycles", lambda r: str(r.get("ref_cycles", "n/a"))),
          ("our cycles", lambda r: str(r.get("cycles", "n/a"))),
          ("speedup", lambda r: _f(r.get("speedup"), ".3f")),
          ("roofline eff.", lambda r: _f(r.get("roofline_efficiency"), ".3f"))]


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(none)"]
    head = "| " + " | ".join(h for h, _ in _TABLE) + " |"
    rule = "|" + "|".join("---" for _ in _TABLE) + "|"
    return [head, rule, *("| " + " | ".join(f(r) for _, f in _TABLE) + " |" for r in rows)]


def write_markdown(rows: list[dict], summary: dict, path: Path, title: str = "DeepBench",
                   provenance: list[str] | tuple[str, ...] = ()) -> None:
    low = [r for r in rows if r.get("ref_padding_efficiency") is not None
           and r["ref_padding_efficiency"] < LOW_UTILIZATION]
    top = sorted((r for r in rows if r.get("speedup") is not None), key=lambda r: -r["speedup"])[:10]
    worst = sorted((r for r in rows if r.get("verified") is True), key=lambda r: r["roofline_efficiency"])[:10]
    head = [*provenance, ""] if provenance else []
    text = [f"# {title}", "", *head, *(f"- {line}" for line in summary_lines(summary, title)), "",
            f"## Low utilization: the reference keeps < {LOW_UTILIZATION:.0%} of its MACs useful", "",
            *_table(low), "", "## The 10 largest speedups", "", *_table(top), "",
            "## The 10 lowest roofline efficiencies (ours)", "", *_table(worst), ""]
    path.write_text("\n".join(text))


def write_plot(rows: list[dict], path: Path, title: str = "DeepBench") -> None:
    """Two panels in suite order: speedup (log) and roofline efficiency, gemm and conv2d in two colours."""
    import matplotlib  # lazily: only the PNG needs it, and it is slow to import

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    colour = {"gemm": "tab:blue", "conv2d": "tab:orange", "einsum": "tab:green"}
    kinds = [k for k in colour if any(r.get("kind") == k for r in rows)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8.0, 0.06 * len(rows) + 4), 7), sharex=True)
    for kind in kinds:
        xs = [i for i, r in enumerate(rows) if r.get("kind") == kind and r.get("speedup") is not None]
        ys = [rows[i]["speedup"] for i in xs]
        top.vlines(xs, 1.0, ys, colors=colour[kind], linewidth=1)
        top.scatter(xs, ys, s=12, color=colour[kind], label=kind, zorder=3)
        xs = [i for i, r in enumerate(rows) if r.get("kind") == kind and r.get("verified") is True]
        bottom.bar(xs, [rows[i]["roofline_efficiency"] for i in xs], color=colour[kind], width=0.8, label=kind)
    ref = [i for i, r in enumerate(rows) if r.get("ref_verified") is True]
    bottom.scatter(ref, [rows[i]["ref_roofline_efficiency"] for i in ref], marker="_", s=30,
                   color="black", label="reference", zorder=3)
    top.axhline(1.0, color="grey", linewidth=0.8)
    if any(r.get("speedup") is not None for r in rows):
        top.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 1.25, not 1.25x10^0
        top.yaxis.set_major_formatter(plain)
        top.yaxis.set_minor_formatter(plain)
        low, high = top.get_ylim()
        if high / low > 30:  # over decades the minor labels would overlap
            top.yaxis.set_minor_formatter(NullFormatter())
    else:
        top.text(0.5, 0.5, "no operator with a speedup", transform=top.transAxes, ha="center")
    top.set_ylabel("speedup over the reference mapping")
    bottom.set_ylabel("roofline efficiency")
    bottom.set_ylim(0, 1.05)
    top.set_title(f"{title}: {len(rows)} operators")
    for ax in (top, bottom):
        if kinds:
            ax.legend(loc="best", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if len(rows) <= 40:  # names stay readable; beyond that the suite order speaks for itself
        bottom.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=90, fontsize=7)
    else:
        bottom.set_xlabel(f"operators in suite order ({len(rows)})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- the selection

FORMAT = "embedcsp-bench/1"
SUFFIXES = (".csv", ".json", ".md", ".png")
DEFAULT_ACCELERATOR = "vta"  # the shipped default description's name: its files keep the plain stem
_TITLE_NAMES = 4  # names a subset title lists before "and N more"


def subset_tag(names: list[str] | tuple[str, ...]) -> str:
    """8 hex digits naming a set of operators, whatever their order."""
    return hashlib.sha256(",".join(sorted(names)).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Selection:
    """What a result set is of: its identity decides which file it may replace."""

    suite: str | None  # the suite of a whole-suite run; None for named operators
    operators: tuple[str, ...]  # canonical names in run order
    accelerator: str
    accelerator_sha256: str  # Accelerator.digest
    board: str
    seed: int

    @property
    def stem(self) -> str:
        """deepbench_<suite> or deepbench_subset-<h>, after `<accelerator>_` for any accelerator
        but the default VTA, so each accelerator's results sit beside the others."""
        base = f"deepbench_{self.suite}" if self.suite else f"deepbench_subset-{subset_tag(self.operators)}"
        if self.accelerator == DEFAULT_ACCELERATOR:
            return base
        return re.sub(r"[^A-Za-z0-9.-]+", "-", self.accelerator).strip("-") + "_" + base

    @property
    def short_title(self) -> str:
        on = "" if self.accelerator == DEFAULT_ACCELERATOR else f" on {self.accelerator}"
        what = "Network" if self.suite in networks.NETWORKS else "DeepBench"  # a network suite: its layers
        return f"{what} {self.suite or 'subset'}{on}"

    @property
    def title(self) -> str:
        if self.suite:
            return self.short_title
        n, shown = len(self.operators), ", ".join(self.operators[:_TITLE_NAMES])
        more = f", and {n - _TITLE_NAMES} more" if n > _TITLE_NAMES else ""
        on = "" if self.accelerator == DEFAULT_ACCELERATOR else f" on {self.accelerator}"
        return f"DeepBench subset ({n} operator{'s' * (n != 1)}: {shown}{more}){on}"

    def as_dict(self) -> dict:
        return {"suite": self.suite, "operators": list(self.operators),
                "operators_sha256": hashlib.sha256(",".join(sorted(self.operators)).encode()).hexdigest(),
                "accelerator": self.accelerator, "accelerator_sha256": self.accelerator_sha256,
                "board": self.board, "seed": self.seed}

    def describe(self) -> str:
        what = (f"suite {self.suite} ({len(self.operators)} operators)" if self.suite
                else f"subset of {len(self.operators)}: {', '.join(self.operators)}")
        return (f"{what}; accelerator {self.accelerator} (sha256 {self.accelerator_sha256[:12]}), "
                f"board {self.board}, seed {self.seed}")

    def differences(self, recorded: dict) -> list[str]:
        """How a recorded selection (`as_dict` of an earlier run) differs from this one; [] if the same."""
        diffs = []
        theirs_suite = recorded.get("suite")
        if theirs_suite != self.suite:
            def kind(suite, ops) -> str:
                return f"suite {suite}" if suite else f"a subset of {len(ops)}"
            diffs.append(f"it holds {kind(theirs_suite, recorded.get('operators') or [])}, "
                         f"this run is {kind(self.suite, self.operators)}")
        elif not self.suite and sorted(recorded.get("operators") or []) != sorted(self.operators):
            diffs.append("it holds other operators")
        for key, label in (("accelerator_sha256", "accelerator sha256"), ("board", "board"), ("seed", "seed")):
            ours, theirs = getattr(self, key), recorded.get(key)
            if theirs != ours:
                if key == "accelerator_sha256":
                    ours, theirs = ours[:12], str(theirs)[:12]
                diffs.append(f"{label} {theirs}, this run {ours}")
        return diffs


def conflict(out: Path, stem: str, selection: Selection) -> str | None:
    """Why the four files `out/stem.*` must not be replaced by `selection`'s results; None if they may."""
    present = [out / f"{stem}{x}" for x in SUFFIXES if (out / f"{stem}{x}").exists()]
    if not present:
        return None
    record = out / f"{stem}.json"
    if not record.exists():
        return f"{present[0]} exists without {record.name}, so nothing tells which selection it holds"
    try:
        doc = json.loads(record.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{record} is not a readable bench result ({type(exc).__name__})"
    recorded = doc.get("selection") if isinstance(doc, dict) else None
    if not isinstance(recorded, dict):
        return f"{record} records no selection (written before bench recorded one, or not by bench)"
    diffs = selection.differences(recorded)
    if diffs:
        return f"{record} holds another selection: {'; '.join(diffs)}"
    return None


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class BenchConfig:
    suite: str = "all"
    only: tuple[str, ...] = ()  # operator names; empty means the whole suite
    jobs: int = 2
    board: str | None = None  # None: the accelerator family's default board
    out: Path = Path("bench")
    isa: str | None = None
    time_limit: float = 10.0
    seed: int = 0
    store: Path | None = None  # the results store; None: <out>/results.sqlite
    fresh: bool = False  # recompute every operator (and replace its stored row)
    engine: str = "local"  # "local" (worker processes) or "ray" (bench_engines)
    address: str | None = None  # the Ray cluster; None starts a local Ray instance

    def store_path(self) -> Path:
        return self.store if self.store is not None else self.out / STORE_NAME

    def engine_spec(self) -> EngineSpec:
        return EngineSpec(self.engine, self.address)

    def run_key(self, selection: Selection) -> RunKey:
        """The store's key of this run's rows (with the operator's name)."""
        return RunKey(accelerator_sha256=selection.accelerator_sha256, board=selection.board,
                      seed=self.seed, time_limit=float(self.time_limit), version=code_version())

    def names(self) -> list[str]:
        """Operator names to run, checked up front so a typo costs nothing."""
        if not self.only:
            return names_for(self.suite)
        return list(dict.fromkeys(canonical_name(n, self.suite) for n in self.only))  # canonical, deduplicated

    def selection(self) -> Selection:
        acc = load_accelerator(self.isa)
        return Selection(suite=None if self.only else self.suite, operators=tuple(self.names()),
                         accelerator=acc.name, accelerator_sha256=acc.digest, board=self.board_for(acc),
                         seed=self.seed)

    def board_for(self, acc) -> str:
        return self.board or family(acc.family).default_board

    def provenance(self) -> dict:
        # The release and the digest of the sources, as the results store keys rows: which
        # compiler made a committed baseline.
        return {"embedcsp": __version__, "code_version": code_version(), "time_limit": self.time_limit,
                "isa": self.isa or "shipped vta.toml", "jobs": self.jobs}

    def check(self) -> None:
        """Refuse bad options before any work, with the CLI's one-line errors."""
        if self.suite not in SUITES:
            raise BadInput(f"unknown suite {self.suite!r}: expected one of {', '.join(SUITES)}")
        if self.jobs < 1:
            raise BadInput(f"--jobs must be at least 1, got {self.jobs}")
        check_time_limit(self.time_limit)
        check_seed(self.seed)
        if self.out.exists() and not self.out.is_dir():
            raise BadInput(f"--out {str(self.out)!r} exists and is not a directory")
        if self.store_path().exists() and not self.store_path().is_file():
            raise BadInput(f"--store {str(self.store_path())!r} exists and is not a file")
        self.engine_spec().check()
        acc = load_accelerator(self.isa)
        family(acc.family).check_board(self.board_for(acc))


@dataclass(frozen=True)
class BenchResult:
    rows: list[dict]
    summary: dict
    files: tuple[Path, ...]
    selection: Selection | None = None
    note: str | None = None  # set when the results could not go where the run first meant to write them
    store: Path | None = None  # the results store the rows are in
    from_store: int = 0  # rows found in the store, so not computed by this run

    @property
    def ok(self) -> bool:
        return not self.summary["failed"]

    @property
    def title(self) -> str:
        return self.selection.title if self.selection else "DeepBench"


def _evaluate_safely(name: str, cfg: BenchConfig) -> dict:
    """The engines' task: one row, whatever happens (it runs in a worker process or a Ray task)."""
    try:
        return evaluate(name, cfg.isa, cfg.time_limit, cfg.seed, cfg.board)
    except Exception as exc:  # noqa: BLE001 (a bug must not throw away the rest of an hour-long sweep)
        return _failed_row(name, cfg, f"internal error: {type(exc).__name__}: {exc}")


def _failed_row(name: str, cfg: BenchConfig, error: str) -> dict:
    return {"name": name, "board": cfg.board, "verified": False, "error": error}


def storable(row: dict) -> bool:
    """False for a row that says nothing about its operator (a bug in embedcsp or a worker that
    died): such rows are reported but not stored, so the next run tries again."""
    return not str(row.get("error") or "").startswith(TRANSIENT)


def _rows(names: list[str], cfg: BenchConfig, console, label: str, store: Store,
          key: RunKey) -> tuple[list[dict], int]:
    """Every operator's row, from the store where it has one (unless `cfg.fresh`), else from the
    engine, each stored as it finishes; returns the rows in `names` order and how many were stored
    before this run. The rows are read back from the store, so a fresh run and a rerun write the
    same files."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    kept = {} if cfg.fresh else store.rows(key, names)
    todo = [n for n in names if n not in kept]
    finished = run_tasks(cfg.engine_spec(), _evaluate_safely, todo, cfg, cfg.jobs)  # Ray starts here
    unstored: dict[str, dict] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[last]}"))
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label or f"DeepBench {cfg.suite}", total=len(names), completed=len(kept),
                            last=f"{len(kept)} from the store" if kept else "")

        def report(row: dict) -> None:
            if not row_ok(row):
                bar.console.print(f"{row['name']}: not verified with both strategies: "
                                  f"{row.get('error') or row.get('ref_error')}")

        for row in kept.values():
            report(row)
        for done in finished:
            row = done.row if done.row is not None else _failed_row(done.name, cfg,
                                                                     f"worker failed: {done.failure}")
            if storable(row):
                store.put(key, done.name, row)
            else:
                unstored[done.name] = row
            report(row)
            bar.update(task, advance=1, last=done.name)
    stored = store.rows(key, names)
    return [stored[n] if n in stored else unstored[n] for n in names], len(kept)


def _free_stem(out: Path, selection: Selection) -> str:
    """The selection's stem if its files may be replaced, else the first free `<stem>-N`."""
    stem = selection.stem
    for n in range(2, 1000):
        if conflict(out, stem, selection) is None:
            return stem
        stem = f"{selection.stem}-{n}"
    raise BadInput(f"--out {str(out)!r}: no free name for {selection.stem}.* up to {stem}")


def write_all(rows: list[dict], summary: dict, out: Path, stem: str, selection: Selection,
              run: dict) -> tuple[Path, ...]:
    """The four files, each written under a temporary name first and then renamed over the old one."""
    files = tuple(out / f"{stem}{x}" for x in SUFFIXES)
    temps = tuple(out / f".{stem}.{os.getpid()}.tmp{x}" for x in SUFFIXES)  # the suffix picks the PNG format
    provenance = [f"Selection: {selection.describe()}.",
                  f"Run: embedcsp {run.get('embedcsp')}, time limit {run.get('time_limit')} s, "
                  f"ISA {run.get('isa')}."]
    try:
        write_csv(rows, temps[0])
        write_json(rows, summary, temps[1], selection, run)
        write_markdown(rows, summary, temps[2], selection.title, provenance)
        write_plot(rows, temps[3], selection.short_title)
        for temp, final in zip(temps, files):
            os.replace(temp, final)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return files


def run(cfg: BenchConfig, console=None) -> BenchResult:
    """Check the options and the files the run would replace, evaluate every operator, write the four files."""
    cfg.check()
    selection = cfg.selection()
    cfg = replace(cfg, board=selection.board)  # the family's default board, where none was named
    why = conflict(cfg.out, selection.stem, selection)
    if why:
        raise BadInput(f"bench will not overwrite {cfg.out / selection.stem}.*: {why}; "
                       "remove those files or choose another --out")
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--out {str(cfg.out)!r}: {exc.strerror}") from None
    start = time.perf_counter()
    with open_store(cfg.store_path()) as store:
        rows, from_store = _rows(list(selection.operators), cfg, console, selection.short_title, store,
                                 cfg.run_key(selection))
    summary = summarize(rows, time.perf_counter() - start, networks.counts(list(selection.operators)))
    stem = _free_stem(cfg.out, selection)  # another run may have written the stem meanwhile
    note = None
    if stem != selection.stem:
        note = (f"{cfg.out / selection.stem}.* now holds another selection "
                f"({conflict(cfg.out, selection.stem, selection)}); wrote {stem}.* instead")
    files = write_all(rows, summary, cfg.out, stem, selection, cfg.provenance())
    return BenchResult(rows, summary, files, selection, note, cfg.store_path(), from_store)
