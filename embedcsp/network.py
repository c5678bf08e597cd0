"""`embedcsp compile MODEL.onnx`: every matrix layer of an ONNX model solved, verified and checked
against onnxruntime, with a network report (docs/onnx.md).

    import_model (onnx_import.py) -> distinct (operator, options) -> solve_shape in worker processes
    -> one bundle per layer (a shared shape's bundle hard-linked or copied) -> onnxruntime check per
    layer -> network report (text, network.json, network.md)

Pure parts: `plan_jobs`, `summarize`, `report_lines`, `markdown`. `solve_shape` is one worker's
job; `compile_network` ties it all together; `compile_cmd` is the CLI command.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from embedcsp.__about__ import __version__
from embedcsp.accelerator import load_accelerator
from embedcsp.errors import (
    EXIT_FAILED,
    BadInput,
    EmbedcspError,
    NoEmbedding,
    SolverTimeout,
)
from embedcsp.onnx_import import (
    NOT_MATRIX,
    Layer,
    Network,
    check_model,
    import_model,
    parse_dims,
    reference_operator,
    safe_name,
)
from embedcsp.operator import Operator
from embedcsp.pipeline import (
    Options,
    check_seed,
    check_time_limit,
    compile_operator,
    host_transforms,
    solve_and_verify,
)
from embedcsp.reference import Epilogue, accumulate, random_inputs
from embedcsp.targets.registry import family

FORMAT = "embedcsp-network/1"
FILES = ("manifest.json", "program.bin", "dram.bin", "layout.npz")


@dataclass(frozen=True)
class NetworkConfig:
    model: Path
    isa: str | None = None
    out: Path | None = None
    jobs: int = 2
    time_limit: float = 10.0
    seed: int = 0
    dims: tuple[tuple[str, int], ...] = ()  # symbolic dims of the graph inputs fixed by name (--dim)

    def check(self) -> None:
        if self.jobs < 1:
            raise BadInput(f"--jobs must be at least 1, got {self.jobs}")
        check_time_limit(self.time_limit)
        check_seed(self.seed)
        if self.out is not None and self.out.exists() and not self.out.is_dir():
            raise BadInput(f"--out {str(self.out)!r} exists and is not a directory")


@dataclass(frozen=True)
class ShapeJob:
    """One distinct operator shape: what a worker solves, verifies, costs and writes."""

    key: int
    operator: Operator
    options: Options
    isa: str | None
    seed: int
    bundle: str | None  # the directory of the first layer with this shape
    reference: bool  # also compile the family's fixed mapping


def layer_options(layer: Layer, acc, cfg: NetworkConfig) -> Options:
    """Integer layers keep int32 outputs where the family can store them (ONNX's ConvInteger
    and MatMulInteger output int32); otherwise the family's default epilogue."""
    offered = family(acc.family).epilogues
    epilogue = Epilogue("int32") if layer.integer and "int32" in offered else None
    return Options(time_limit=cfg.time_limit, seed=cfg.seed, epilogue=epilogue)


def plan_jobs(net: Network, acc, cfg: NetworkConfig) -> tuple[list[ShapeJob], list[int]]:
    """The distinct (operator, options) in graph order, and each layer's job key."""
    keys: dict[tuple[Operator, Options], int] = {}
    jobs: list[ShapeJob] = []
    per_layer = []
    has_reference = family(acc.family).reference is not None
    for layer in net.layers:
        options = layer_options(layer, acc, cfg)
        key = (layer.operator, options)
        if key not in keys:
            keys[key] = len(jobs)
            bundle = None if cfg.out is None else str(cfg.out / "layers" / safe_name(layer))
            jobs.append(ShapeJob(len(jobs), layer.operator, options, cfg.isa, cfg.seed, bundle, has_reference))
        per_layer.append(keys[key])
    return jobs, per_layer


def solve_shape(job: ShapeJob) -> dict:
    """Compile, run on random int8 inputs, verify, cost and write the bundle of one shape, and the
    family's reference mapping where it has one. Errors become part of the result."""
    from embedcsp import run as run_compiled
    from embedcsp import write_bundle

    res: dict = {"key": job.key}
    op = job.operator
    try:
        acc = load_accelerator(job.isa)
        compiled = compile_operator(op, acc, job.options)
        inputs = random_inputs(op, job.seed)
        if job.bundle is not None:
            ran = write_bundle(compiled, job.bundle, inputs, job.seed)
        else:
            ran = run_compiled(compiled, inputs)
        fam = family(acc.family)
        timing, roof = fam.cost(compiled), fam.roofline(compiled)
        emb, v = compiled.embedding, ran.verification
        transforms = host_transforms(compiled)
        res.update(
            compiled=True, form=compiled.form, binding=dict(emb.binding), embedding=emb.describe(),
            solver_status=compiled.report.status, solve_s=round(compiled.report.seconds, 3),
            padding_efficiency=round(compiled.efficiency, 6), useful_macs=op.macs, issued_macs=emb.padded_macs,
            duplication=round(max(t.duplication for t in transforms), 4),
            host_packed_bytes=sum(t.packed_bytes for t in transforms),
            cycles=timing.cycles, roofline_cycles=roof.cycles,
            roofline_efficiency=round(roof.efficiency(timing.cycles), 4),
            verified=v.ok, checked=v.checked, first_mismatch=v.first_mismatch,
            epilogue=compiled.options.epilogue, board=compiled.options.board,
            inputs=inputs, output=ran.outputs[op.output.name], sums=accumulate(op, inputs))
    except (NoEmbedding, SolverTimeout) as exc:
        return {**res, "compiled": False, "reason": f"{type(exc).__name__}: {exc}"}
    except EmbedcspError as exc:
        return {**res, "compiled": False, "error": str(exc), "verified": False}
    except Exception as exc:  # noqa: BLE001 (one bug must not hide the rest of the network)
        return {**res, "compiled": False, "error": f"internal error: {type(exc).__name__}: {exc}",
                "verified": False}
    if job.reference:
        try:
            ref_op = reference_operator(op)
            o = solve_and_verify(ref_op, acc, replace(job.options, strategy="reference"), job.seed)
            if ref_op != op:
                res["ref_operator"] = ref_op.describe()
            res.update(ref_cycles=o.timing.cycles, ref_verified=o.verification.ok,
                       ref_padding_efficiency=round(o.compiled.efficiency, 6),
                       ref_roofline_efficiency=round(o.roofline.efficiency(o.timing.cycles), 4))
        except EmbedcspError as exc:
            res["ref_error"] = str(exc)
    return res


def _solve_all(jobs: list[ShapeJob], n_workers: int, console) -> dict[int, dict]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    results: dict[int, dict] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=console is None) as bar:
        task = bar.add_task("distinct layer shapes", total=len(jobs))
        workers = min(n_workers, len(jobs))
        if workers <= 1:
            for job in jobs:
                results[job.key] = solve_shape(job)
                bar.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(solve_shape, job): job.key for job in jobs}
                for fut in as_completed(futures):
                    try:
                        results[futures[fut]] = fut.result()
                    except Exception as exc:  # noqa: BLE001 (a worker died, e.g. out of memory)
                        results[futures[fut]] = {"key": futures[fut], "compiled": False, "verified": False,
                                                 "error": f"worker failed: {type(exc).__name__}: {exc}"}
                    bar.advance(task)
    return results


# ------------------------------------------------------------------------- onnxruntime

def ort_check(layer: Layer, res: dict) -> dict:
    """onnxruntime's ConvInteger/MatMulInteger on the layer's int8 inputs, reshaped to the node's
    layouts: its int32 output against our ground truth's sums, and against the program's output
    through the epilogue (the low 8 bits under wrap, the sums themselves under int32)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"ort": "unavailable", "ort_ok": None,
                "ort_detail": "onnxruntime is not installed: pip install 'embedcsp[onnx]'"}
    op = layer.operator
    feeds = {feed: res["inputs"][t.name].reshape(layer.onnx_shape(t.name))
             for feed, t in zip(("a", "b"), op.inputs)}
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(check_model(layer).SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        got = session.run(None, feeds)[0]
    except Exception as exc:  # noqa: BLE001 (onnxruntime refusing the node is a finding, not a crash)
        return {"ort": "error", "ort_ok": False, "ort_detail": f"onnxruntime: {str(exc).splitlines()[0]}"}
    if got.dtype != np.int32 or got.size != op.output.size:
        return {"ort": "differs", "ort_ok": False,
                "ort_detail": f"onnxruntime gave {got.dtype} {list(got.shape)}, expected int32 "
                              f"{list(layer.onnx_shape(op.output.name))}"}
    got = got.reshape(op.output.shape)
    epilogue: Epilogue = res["epilogue"]
    sums_equal = bool(np.array_equal(got, res["sums"]))
    program_equal = bool(np.array_equal(epilogue.apply(got), res["output"]))
    how = "the int32 sums" if epilogue.kind == "int32" else f"{epilogue.name} of the sums"
    what = f"{layer.check.op_type}" + (" after Transpose" if any(layer.check.transpose) else "")
    if sums_equal and program_equal:
        return {"ort": "equal", "ort_ok": True,
                "ort_detail": f"{what}: {got.size} int32 sums equal; program output equal to {how}"}
    bad = int((got != res["sums"]).sum())
    return {"ort": "differs", "ort_ok": False,
            "ort_detail": f"{what}: {bad} of {got.size} int32 sums differ; program output "
                          f"{'equal' if program_equal else 'differs'} ({how})"}


# ------------------------------------------------------------------------- rows and totals

def _binding_text(binding: dict) -> str:
    return ", ".join(f"{p}<-{t}" for p, t in binding.items())


def layer_row(layer: Layer, res: dict, first: Layer, bundle: str | None) -> dict:
    """One layer of the report: the node, its operator, and its shape's result."""
    row = {
        "index": layer.index, "name": layer.name, "op_type": layer.op_type, "shape": layer.shape,
        "operator": layer.operator.describe(), "statement": layer.operator.statement(),
        "integer": layer.integer,
        "compiled_as": ("int8 x int8 -> int32, as in the model" if layer.integer
                        else "int8 x int8 -> int32 (the model's layer is float)"),
        "onnx_values": dict(layer.values), "host_work": list(layer.host),
        "shared_with": None if first is layer else first.name, "bundle": bundle,
    }
    keep = ("compiled", "reason", "error", "form", "binding", "solver_status", "solve_s", "padding_efficiency",
            "useful_macs", "issued_macs", "duplication", "host_packed_bytes", "cycles", "roofline_cycles",
            "roofline_efficiency", "verified", "checked", "first_mismatch", "board", "ref_cycles",
            "ref_verified", "ref_padding_efficiency", "ref_roofline_efficiency", "ref_error", "ref_operator")
    row.update({k: res[k] for k in keep if k in res})
    if res.get("compiled"):
        row["epilogue"] = res["epilogue"].name
        row["embedding"] = res["embedding"]
        if row.get("ref_verified") and row.get("verified"):
            row["speedup"] = round(row["ref_cycles"] / row["cycles"], 4)
    return row


def _geomean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0]
    return round(statistics.geometric_mean(values), 4) if values else None


def summarize(rows: list[dict], net: Network, solved: int, wall_s: float | None = None) -> dict:
    """Totals over the layers, every figure counted per occurrence of a layer."""
    compiled = [r for r in rows if r.get("compiled")]
    verified = [r for r in compiled if r.get("verified")]
    both = [r for r in verified if r.get("ref_verified")]
    ort_checked = [r for r in compiled if r.get("ort_ok") is not None]
    not_compiled = [r for r in rows if not r.get("compiled")]
    host = [{"index": h.index, "name": h.name, "op_type": h.op_type, "reason": h.reason} for h in net.host]
    host += [{"index": r["index"], "name": r["name"], "op_type": r["op_type"], "reason": r["reason"]}
             for r in not_compiled if r.get("reason")]
    by_type: dict[str, int] = {}
    for h in host:
        by_type[h["op_type"]] = by_type.get(h["op_type"], 0) + 1
    return {
        "nodes": net.nodes,
        "layers": len(rows),
        "distinct_shapes": solved,
        "compiled": len(compiled),
        "verified": len(verified),
        "failed": [r["name"] for r in rows if r.get("error") or (r.get("compiled") and not r.get("verified"))],
        "ort_checked": len(ort_checked),
        "ort_equal": sum(r["ort_ok"] is True for r in ort_checked),
        "ort_differs": [r["name"] for r in ort_checked if r["ort_ok"] is False],
        "cycles": sum(r["cycles"] for r in verified),
        "layers_with_reference": len(both),
        "cycles_where_reference": sum(r["cycles"] for r in both),
        "ref_cycles": sum(r["ref_cycles"] for r in both),
        "speedup": (round(sum(r["ref_cycles"] for r in both) / sum(r["cycles"] for r in both), 4)
                    if both else None),
        "geomean_speedup": _geomean([r["speedup"] for r in both]),
        "geomean_padding_efficiency": _geomean([r["padding_efficiency"] for r in verified]),
        "geomean_roofline_efficiency": _geomean([r["roofline_efficiency"] for r in verified]),
        "geomean_roofline_efficiency_where_reference": _geomean([r["roofline_efficiency"] for r in both]),
        "ref_geomean_roofline_efficiency": _geomean([r["ref_roofline_efficiency"] for r in both]),
        "host_nodes": host,
        "host_by_type": dict(sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
        "wall_s": None if wall_s is None else round(wall_s, 1),
    }


def ok(summary: dict) -> bool:
    return not summary["failed"] and not summary["ort_differs"]


# ------------------------------------------------------------------------- the report

def _f(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def _status(r: dict) -> str:
    if r.get("error"):
        return "ERROR"
    if not r.get("compiled"):
        return "host"
    return "yes" if r.get("verified") else "FAILED"


_COLUMNS = [  # (header, cell) of the layer table, text and markdown alike
    ("#", lambda r: str(r["index"])),
    ("node", lambda r: r["name"]),
    ("op", lambda r: r["op_type"]),
    ("layer", lambda r: r["shape"]),
    ("form", lambda r: r.get("form", "-")),
    ("binding", lambda r: _binding_text(r["binding"]) if r.get("binding") else "-"),
    ("dup", lambda r: _f(r.get("duplication"), ".2f")),
    ("pad eff", lambda r: _f(r.get("padding_efficiency"), ".3f")),
    ("cycles", lambda r: str(r.get("cycles", "n/a"))),
    ("ref cycles", lambda r: str(r.get("ref_cycles", "n/a"))),
    ("roofline", lambda r: _f(r.get("roofline_efficiency"), ".3f")),
    ("verified", _status),
    ("onnxruntime", lambda r: r.get("ort", "-")),
]


def _header(net: Network, acc_text: str) -> list[str]:
    return [f"model      {net.path} (graph {net.graph or '-'}, opset {net.opset}, sha256 {net.sha256[:12]})",
            f"target     {acc_text}"]


def totals_lines(s: dict) -> list[str]:
    lines = [
        (f"layers     {s['layers']} of {s['nodes']} nodes ({s['distinct_shapes']} distinct shapes solved once "
         f"each): {s['verified']} verified bit-exact, {s['compiled'] - s['verified']} failed, "
         f"{s['layers'] - s['compiled']} not compiled"),
        (f"onnxruntime {s['ort_equal']} of {s['ort_checked']} layers equal (int32 sums and program outputs)"
         + (f"; DIFFERS: {', '.join(s['ort_differs'])}" if s["ort_differs"] else "")),
        f"cycles     {s['cycles']} ours over the verified layers"
        + (f"; where the reference compiles ({s['layers_with_reference']} layers): {s['cycles_where_reference']} "
           f"ours vs {s['ref_cycles']} reference, x{s['speedup']:.3f} (geomean per layer "
           f"x{_f(s['geomean_speedup'], '.3f')})" if s["layers_with_reference"] else "; no layer has a reference"),
        f"geomean    padding efficiency {_f(s['geomean_padding_efficiency'], '.3f')}, roofline efficiency "
        f"{_f(s['geomean_roofline_efficiency'], '.3f')} ours ({s['verified']} layers)"
        + (f"; where the reference compiles {_f(s['geomean_roofline_efficiency_where_reference'], '.3f')} ours vs "
           f"{_f(s['ref_geomean_roofline_efficiency'], '.3f')} reference" if s["layers_with_reference"] else ""),
        "host       " + (", ".join(f"{t} {n}" for t, n in s["host_by_type"].items()) or "nothing")
        + f" ({len(s['host_nodes'])} nodes left to the host)",
    ]
    if s["wall_s"] is not None:
        lines.append(f"wall time  {s['wall_s']:.1f} s")
    if s["failed"]:
        lines.append(f"FAILED     {', '.join(s['failed'])}")
    return lines


def _table(rows: list[dict], sep: str = "  ") -> list[str]:
    cells = [[h for h, _ in _COLUMNS], *[[f(r) for _, f in _COLUMNS] for r in rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(_COLUMNS))]
    return [sep.join(c.ljust(w) for c, w in zip(cell, widths)).rstrip() for cell in cells]


def report_lines(net: Network, rows: list[dict], s: dict, acc_text: str) -> list[str]:
    """The text report: the model, one line per layer, notes, totals, the host's nodes."""
    lines = [*_header(net, acc_text), "", *_table(rows), ""]
    floats = [r["name"] for r in rows if not r["integer"] and r.get("compiled")]
    if floats:
        lines.append(f"note       {len(floats)} float layers are compiled as int8 x int8 -> int32 (embedcsp's "
                     "operator model); onnxruntime's ConvInteger/MatMulInteger checks their integer semantics")
    for r in rows:
        if r.get("host_work"):
            lines.append(f"host work  {r['name']}: {'; '.join(r['host_work'])}")
        if r.get("error"):
            lines.append(f"error      {r['name']}: {r['error']}")
        elif r.get("compiled") and not r.get("verified"):
            lines.append(f"FAILED     {r['name']}: {r.get('first_mismatch')}")
        if r.get("ort_ok") is False:
            lines.append(f"onnxruntime {r['name']}: {r['ort_detail']}")
    lines += totals_lines(s)
    for h in s["host_nodes"]:  # the others are every node of a type embedcsp does not compile
        if h["reason"] != NOT_MATRIX:
            lines.append(f"  host     {h['name']} ({h['op_type']}): {h['reason']}")
    return lines


def markdown(net: Network, rows: list[dict], s: dict, acc_text: str) -> str:
    cols = _COLUMNS
    table = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    table += ["| " + " | ".join(f(r).replace("|", "\\|") for _, f in cols) + " |" for r in rows]
    text = [f"# {Path(net.path).name} on {acc_text}", "", *(f"- {x}" for x in _header(net, acc_text)), "",
            "## Totals", "", *(f"- {x}" for x in totals_lines(s)), "", "## Layers", "", *table, "",
            "## Operators and embeddings", ""]
    for r in rows:
        shared = f", shares the bundle of {r['shared_with']}" if r["shared_with"] else ""
        text.append(f"### {r['index']} {r['name']} ({r['op_type']}{shared})")
        text += ["", f"- layer: {r['shape']}; {r['compiled_as']}", f"- operator: `{r['operator']}`",
                 f"- statement: `{r['statement']}`"]
        if r.get("host_work"):
            text.append(f"- host: {'; '.join(r['host_work'])}")
        for line in r.get("embedding", []):
            text.append(f"- embedding: {line}")
        if r.get("reason") or r.get("error"):
            text.append(f"- not compiled: {r.get('reason') or r.get('error')}")
        if r.get("ref_error"):
            text.append(f"- reference: n/a ({r['ref_error']})")
        elif r.get("ref_operator"):
            text.append(f"- reference: `{r['ref_operator']}` (the fixed mapping packs the transposed input on "
                        "the host)")
        if r.get("ort_detail"):
            text.append(f"- onnxruntime: {r['ort_detail']}")
        text.append("")
    text += ["## Nodes left to the host", "", "| node | op | reason |", "|---|---|---|"]
    text += [f"| {h['name']} | {h['op_type']} | {h['reason']} |" for h in s["host_nodes"]]
    return "\n".join(text) + "\n"


# ------------------------------------------------------------------------- the run

@dataclass(frozen=True)
class NetworkResult:
    network: Network
    rows: list[dict]
    summary: dict
    accelerator: str
    files: tuple[Path, ...] = ()

    @property
    def ok(self) -> bool:
        return ok(self.summary)


def _link_bundle(src: Path, dst: Path) -> None:
    """A layer that shares a shape: the same bundle files, hard-linked where the file system allows."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in [*FILES, "FAILED"]:
        target = dst / name
        if target.exists() or target.is_symlink():
            target.unlink()
        if not (src / name).exists():
            continue
        try:
            os.link(src / name, target)
        except OSError:
            shutil.copy2(src / name, target)


def compile_network(cfg: NetworkConfig, console=None) -> NetworkResult:
    """Import, solve each distinct shape once, write the bundles, check with onnxruntime, report."""
    cfg.check()
    net = import_model(cfg.model, dict(cfg.dims))
    if not net.layers:
        why = "; ".join(sorted({f"{h.op_type}: {h.reason}" for h in net.host if h.reason != NOT_MATRIX}))
        raise BadInput(f"{cfg.model}: no node embedcsp compiles among its {net.nodes} "
                       f"({', '.join(f'{t} {n}' for t, n in net.host_by_type().items()) or 'none'})"
                       + (f"; refused: {why}" if why else ""))
    acc = load_accelerator(cfg.isa)
    start = time.perf_counter()
    jobs, keys = plan_jobs(net, acc, cfg)
    if cfg.out is not None:
        try:
            (cfg.out / "layers").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"--out {str(cfg.out)!r}: {exc.strerror}") from None
    results = _solve_all(jobs, cfg.jobs, console)
    firsts: dict[int, Layer] = {}
    rows = []
    for layer, key in zip(net.layers, keys):
        first = firsts.setdefault(key, layer)
        res = results[key]
        bundle = None
        if cfg.out is not None and res.get("compiled"):
            path = cfg.out / "layers" / safe_name(layer)
            if first is not layer:
                _link_bundle(cfg.out / "layers" / safe_name(first), path)
            bundle = str(path)
        row = layer_row(layer, res, first, bundle)
        if res.get("compiled"):
            row.update(ort_check(layer, res))
        rows.append(row)
    summary = summarize(rows, net, len(jobs), time.perf_counter() - start)
    fam = family(acc.family)
    board = next((r["board"] for r in rows if r.get("board")), fam.default_board)
    acc_text = f"{acc.name} (family {acc.family}, {acc.config.tag()}, sha256 {acc.digest[:12]}), board {board}"
    files: tuple[Path, ...] = ()
    if cfg.out is not None:
        doc = {"format": FORMAT, "embedcsp_version": __version__,
               "model": {"path": net.path, "sha256": net.sha256, "graph": net.graph, "opset": net.opset,
                         "nodes": net.nodes},
               "accelerator": {"name": acc.name, "family": acc.family, "sha256": acc.digest, "board": board,
                               "reference": fam.reference},
               "options": {"time_limit": cfg.time_limit, "seed": cfg.seed, "jobs": cfg.jobs,
                           "isa": cfg.isa or "shipped vta.toml"},
               "summary": summary, "layers": rows}
        files = (cfg.out / "network.json", cfg.out / "network.md")
        try:
            files[0].write_text(json.dumps(doc, indent=2, default=str) + "\n")
            files[1].write_text(markdown(net, rows, summary, acc_text))
        except OSError as exc:
            raise BadInput(f"cannot write the report to {str(cfg.out)!r}: {exc.strerror}") from None
    return NetworkResult(net, rows, summary, acc_text, files)


def compile_cmd(
    model: Path = typer.Argument(..., help="An ONNX model file."),
    isa: Optional[Path] = typer.Option(None, "--isa", help="Accelerator TOML file (default: the shipped VTA)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write one bundle per layer under DIR/layers/, "
                                                            "and DIR/network.json, DIR/network.md."),
    jobs: int = typer.Option(2, "--jobs", help="Worker processes solving distinct layer shapes."),
    time_limit: float = typer.Option(10.0, "--time-limit", help="Solver time limit per shape, in seconds."),
    seed: int = typer.Option(0, "--seed", help="Solver seed and random-input seed."),
    dim: Optional[list[str]] = typer.Option(None, "--dim", show_default=False,
                                            help="Fix a symbolic dim of the graph inputs: --dim N=1 (repeat it)."),
) -> None:
    """Compile every Conv, MatMul and Gemm layer (and their integer and QLinear forms) of an ONNX
    model: each distinct shape solved once, every layer verified bit-exact and checked against
    onnxruntime, with a network report (docs/onnx.md)."""
    import sys

    from rich.console import Console

    console = Console(stderr=True) if sys.stderr.isatty() else None
    try:
        cfg = NetworkConfig(model, None if isa is None else str(isa), out, jobs, time_limit, seed,
                            tuple(parse_dims(dim or []).items()))
        result = compile_network(cfg, console)
    except EmbedcspError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    for line in report_lines(result.network, result.rows, result.summary, result.accelerator):
        typer.echo(line)
    if result.files:
        typer.echo("wrote      " + ", ".join(str(f) for f in result.files) + f", {out}/layers/")
    raise typer.Exit(0 if result.ok else EXIT_FAILED)


__all__ = ["NetworkConfig", "NetworkResult", "compile_cmd", "compile_network"]
