"""Network suites for `embedcsp bench --suite NETWORK`: the matrix layers of whole networks, as tables.

Each network is a CSV shipped in the package (`deepbench/networks/<name>.csv`, format in
docs/networks.md) that states its source in its header comments. A row is one distinct layer
shape with the number of times the network runs it (`count`), so a repeated layer is solved once
and weighted by its count in the whole-network figures.

Pure functions: `layers(network)` -> (Layer, ...), `lookup(name)` -> Layer, `counts(names)`.
A layer's canonical name is `<network>.<layer>`, e.g. ``resnet18.C2`` or ``bert-base.attn-qk``.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
from dataclasses import dataclass
from importlib.resources import files

from embedcsp.errors import BadInput
from embedcsp.operator import Operator, gemm
from embedcsp.ops.bmm import bmm
from embedcsp.ops.conv import conv2d_general

__all__ = ["NETWORKS", "Layer", "counts", "is_network_name", "layer_total", "layers", "lookup"]

#: The shipped networks, in listing order.
NETWORKS: tuple[str, ...] = ("resnet18", "resnet50", "mobilenetv2", "bert-base", "mlperf-tiny")

_KEYS = {
    "conv": {"n", "c", "h", "w", "k", "r", "s", "stride", "stride_h", "stride_w", "pad", "pad_top",
             "pad_bottom", "pad_left", "pad_right", "groups", "dilation", "dilation_h", "dilation_w"},
    "gemm": {"m", "n", "k"},
    "bmm": {"b", "m", "n", "k"},
}
_REQUIRED = {"conv": {"n", "c", "h", "w", "k", "r", "s"}, "gemm": {"m", "n", "k"}, "bmm": {"b", "m", "n", "k"}}


@dataclass(frozen=True)
class Layer:
    """One distinct layer shape of a network and how many times the network runs it."""

    network: str
    layer: str  # the row's name within its table, e.g. "C2"
    op: str  # "conv", "gemm" or "bmm"
    count: int
    shape: tuple[tuple[str, int], ...]  # the table's key=value pairs, in table order

    @property
    def name(self) -> str:
        """Canonical name used by the bench, the results store and reports: ``<network>.<layer>``."""
        return f"{self.network}.{self.layer}"

    @property
    def params(self) -> dict[str, int]:
        return dict(self.shape)

    def operator(self) -> Operator:
        p = self.params
        if self.op == "gemm":
            return gemm(p["m"], p["n"], p["k"])
        if self.op == "bmm":
            return bmm(p["b"], p["m"], p["n"], p["k"])
        stride = (p.get("stride_h", p.get("stride", 1)), p.get("stride_w", p.get("stride", 1)))
        dilation = (p.get("dilation_h", p.get("dilation", 1)), p.get("dilation_w", p.get("dilation", 1)))
        pad = p.get("pad", 0)
        pads = tuple(p.get(f"pad_{side}", pad) for side in ("top", "bottom", "left", "right"))
        return conv2d_general(p["n"], p["c"], p["h"], p["w"], p["k"], p["r"], p["s"], groups=p.get("groups", 1),
                              stride=stride, dilation=dilation, pads=pads)

    def out_hw(self) -> tuple[int, int]:
        """A conv's output height and width (from the operator, so it cannot disagree with it)."""
        if self.op != "conv":
            raise BadInput(f"{self.name} is a {self.op}, not a conv")
        dims = {d.name: d.extent for d in self.operator().dims}
        return dims["p"], dims["q"]


def _parse_shape(where: str, op: str, text: str) -> tuple[tuple[str, int], ...]:
    pairs = []
    for item in text.split():
        key, eq, value = item.partition("=")
        if not eq or not value.isdigit():
            raise BadInput(f"{where}: shape item {item!r} is not key=<whole number>")
        if key not in _KEYS[op]:
            raise BadInput(f"{where}: unknown {op} key {key!r}; expected some of {', '.join(sorted(_KEYS[op]))}")
        if key in dict(pairs):
            raise BadInput(f"{where}: {key} given twice")
        pairs.append((key, int(value)))
    missing = _REQUIRED[op] - {k for k, _ in pairs}
    if missing:
        raise BadInput(f"{where}: a {op} needs {', '.join(sorted(missing))}")
    return tuple(pairs)


def parse_table(network: str, text: str) -> tuple[Layer, ...]:
    """The layers of one table's text (comment lines start with '#'); refuses malformed rows."""
    body = "\n".join(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    rows = list(csv.DictReader(io.StringIO(body)))
    if not rows or set(rows[0]) != {"name", "op", "count", "shape"}:
        raise BadInput(f"network table {network}: expected the columns name,op,count,shape")
    out, seen = [], set()
    for i, row in enumerate(rows, start=2):
        where = f"network table {network}, row {i} ({row['name']!r})"
        if row["op"] not in _KEYS:
            raise BadInput(f"{where}: op must be conv, gemm or bmm, got {row['op']!r}")
        if not row["count"].isdigit() or int(row["count"]) < 1:
            raise BadInput(f"{where}: count must be a whole number >= 1, got {row['count']!r}")
        if not row["name"] or row["name"] in seen:
            raise BadInput(f"{where}: layer names must be present and distinct")
        seen.add(row["name"])
        out.append(Layer(network, row["name"], row["op"], int(row["count"]),
                         _parse_shape(where, row["op"], row["shape"])))
    return tuple(out)


def _check_network(network: str) -> str:
    if isinstance(network, str) and network.strip().lower() in NETWORKS:
        return network.strip().lower()
    raise BadInput(f"unknown network {network!r}: expected one of {', '.join(NETWORKS)}")


@functools.cache
def _layers(network: str) -> tuple[Layer, ...]:
    text = files("embedcsp.deepbench").joinpath("networks", f"{network}.csv").read_text(encoding="utf-8")
    return parse_table(network, text)


def layers(network: str) -> tuple[Layer, ...]:
    """The distinct layers of a shipped network, in table order."""
    return _layers(_check_network(network))


def layer_total(network: str) -> int:
    """The number of layers the network runs: the sum of its counts."""
    return sum(layer.count for layer in layers(network))


def is_network_name(name: str) -> bool:
    """True for a name of the form ``<network>.<layer>`` with a shipped network (the layer unchecked)."""
    return isinstance(name, str) and name.strip().split(".", 1)[0].lower() in NETWORKS and "." in name


def lookup(name: str, network: str | None = None) -> Layer:
    """A layer by canonical name ``<network>.<layer>``; with `network`, a bare layer name also works.
    Layer names are case-sensitive (C2, fc); the network name is not. Raises BadInput with a hint."""
    if not isinstance(name, str):
        raise BadInput(f"layer name must be a string, got {name!r}")
    key = name.strip()
    if is_network_name(key):
        net, layer = key.split(".", 1)
    elif network is not None:
        net, layer = network, key
    else:
        raise BadInput(f"{key!r} is not a network layer: expected <network>.<layer> with a network among "
                       f"{', '.join(NETWORKS)}")
    table = {lay.layer: lay for lay in layers(net)}
    if layer in table:
        return table[layer]
    folded = {lay.layer.lower(): lay for lay in table.values()}
    if layer.lower() in folded:
        return folded[layer.lower()]
    close = difflib.get_close_matches(layer, list(table), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"its layers: {', '.join(table)}"
    raise BadInput(f"network {_check_network(net)} has no layer {layer!r}; {hint}")


def counts(names: list[str] | tuple[str, ...]) -> dict[str, int]:
    """Each network layer's count by canonical name; names that are not network layers are left out."""
    return {n: lookup(n).count for n in names if is_network_name(n)}
