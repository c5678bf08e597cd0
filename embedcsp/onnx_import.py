"""ONNX models to embedcsp operators (docs/onnx.md): pure functions of a loaded model.

Every Conv, ConvInteger, QLinearConv, MatMul, MatMulInteger, QLinearMatMul and Gemm
node becomes a `Layer`: the operator its attributes state, int8 x int8 summed in int32,
with its tensors as reshaped views of the node's own ONNX tensors (the same elements in
the same order), plus what the host still does around it (a bias, a scale, a requant)
and the one-node integer model onnxruntime checks it with. Any other node, and any of
those that does not fit (a 3-D conv, a symbolic shape, a nonzero zero point), is a
`HostNode` with the reason.

    Conv        out[n,g,k,p,q] += data[n,g,c, sh*p+dh*r-top, sw*q+dw*s-left] * weight[g,k,c,r,s]
                (ops.conv2d_general; exactly conv2d without groups, dilation or asymmetric pads;
                a 1-D conv is the 2-D conv of height 1)
    Gemm        C[m,n] += A[m,k] * B[k,n], with transA: A[k,m], with transB: B[n,k]
    MatMul      gemm; leading batch dims of A alone fold into M; of both: bmm over one
                flattened batch dim b; of B alone: C[b,m,n] += A[m,k] * B[b,k,n]

`onnx` is imported lazily, so the rest of embedcsp works without the `onnx` extra.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedcsp.einsum import einsum
from embedcsp.errors import BadInput, EmbedcspError
from embedcsp.operator import Operator, gemm
from embedcsp.ops import bmm, conv2d_general

SUPPORTED = ("Conv", "ConvInteger", "QLinearConv", "MatMul", "MatMulInteger", "QLinearMatMul", "Gemm")
INTEGER = ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul")  # int8 tensors in the model
NOT_MATRIX = "not a matrix operator"  # the reason of every node of another type
CHECK_OPSET = 17  # of the one-node models onnxruntime runs
CHECK_IR_VERSION = 8  # read by onnxruntime >= 1.17
_INT8 = 3  # onnx.TensorProto.INT8
_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 10: "float16",
           11: "float64", 16: "bfloat16"}
# Input positions of the two multiplied tensors and of their zero points.
_OPERANDS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3), "MatMul": (0, 1),
             "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "Gemm": (0, 1)}
_ZERO_POINTS = {"ConvInteger": (2, 3), "MatMulInteger": (2, 3), "QLinearConv": (2, 5), "QLinearMatMul": (2, 5)}
_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


class Refused(Exception):
    """A supported node that embedcsp leaves to the host; the message says why."""


@dataclass(frozen=True)
class IntegerCheck:
    """The one-node model onnxruntime runs on the layer's int8 inputs (`check_model`)."""

    op_type: str  # ConvInteger or MatMulInteger
    attributes: tuple[tuple[str, Any], ...]  # the node's conv attributes, as the node has them
    transpose: tuple[bool, bool] = (False, False)  # Gemm's transA, transB: a Transpose before MatMulInteger


@dataclass(frozen=True)
class Layer:
    index: int  # position of the node in the graph
    name: str  # the node's name (op type and index where it has none), unique in the model
    op_type: str
    operator: Operator
    integer: bool  # the model's own tensors are int8 (ConvInteger, MatMulInteger, QLinear*)
    values: tuple[tuple[str, str], ...]  # operator tensor -> ONNX value name (inputs, then output)
    onnx_shapes: tuple[tuple[str, tuple[int, ...]], ...]  # operator tensor -> its shape in the model
    shape: str  # the layer in ONNX's terms, for reports
    host: tuple[str, ...]  # what the host still does around the program (bias, scales, requant)
    check: IntegerCheck

    def onnx_shape(self, tensor: str) -> tuple[int, ...]:
        return dict(self.onnx_shapes)[tensor]


@dataclass(frozen=True)
class HostNode:
    index: int
    name: str
    op_type: str
    reason: str


@dataclass(frozen=True)
class Network:
    path: str
    sha256: str  # of the model file
    graph: str
    opset: int
    nodes: int
    layers: tuple[Layer, ...]
    host: tuple[HostNode, ...]

    def host_by_type(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for h in self.host:
            counts[h.op_type] = counts.get(h.op_type, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def onnx_module():
    """`onnx`, or BadInput saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise BadInput("embedcsp compile needs onnx and onnxruntime: pip install 'embedcsp[onnx]'") from None
    return onnx


def load_model(path: Path | str, dims: dict[str, int] | None = None):
    """The model at `path` with shapes inferred; BadInput for a missing file or one that is not ONNX.

    `dims` fixes symbolic dims of the graph's inputs by name (`--dim N=1`) before inference."""
    onnx = onnx_module()
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    if not path.is_file():
        raise BadInput(f"{path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 (protobuf's DecodeError and friends: not a model)
        raise BadInput(f"{path}: not an ONNX model ({type(exc).__name__})") from None
    if not model.HasField("graph") or model.ir_version < 1:
        raise BadInput(f"{path}: not an ONNX model (no graph or IR version)")
    if dims:
        fix_dims(model, dims, str(path))
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001 (an inconsistent model)
        raise BadInput(f"{path}: ONNX shape inference refused the model: "
                       f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def fix_dims(model, dims: dict[str, int], where: str) -> None:
    """Give the graph inputs' symbolic dims named in `dims` their values (in place)."""
    found = set()
    for vi in model.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in dims:
                found.add(d.dim_param)
                d.dim_value = dims[d.dim_param]
    unknown = sorted(set(dims) - found)
    if unknown:
        raise BadInput(f"{where}: no graph input has a symbolic dim {', '.join(unknown)} (--dim)")


def parse_dims(items: list[str] | tuple[str, ...]) -> dict[str, int]:
    """['N=1', 'seq=128'] -> {'N': 1, 'seq': 128}, for --dim."""
    out = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip() or not value.strip().isdigit() or int(value) < 1:
            raise BadInput(f"--dim wants NAME=VALUE with a whole VALUE >= 1, got {item!r}")
        out[name.strip()] = int(value)
    return out


def import_model(path: Path | str, dims: dict[str, int] | None = None) -> Network:
    """Load, infer shapes and translate every node (`translate`)."""
    model = load_model(path, dims)
    sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return translate(model, str(path), sha)


def translate(model, path: str = "<model>", sha256: str = "") -> Network:
    """Every node of the main graph, in graph order, as a Layer or a HostNode."""
    graph = model.graph
    shapes, dtypes = _value_infos(model)
    constants = _constants(model)
    layers: list[Layer] = []
    host: list[HostNode] = []
    seen: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{index}"
        if name in seen:  # names are unique in a valid model; keep them unique here anyway
            name = f"{name}_{index}"
        seen[name] = index
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED:
            host.append(HostNode(index, name, node.op_type, NOT_MATRIX))
            continue
        try:
            layers.append(_layer(index, name, node, shapes, dtypes, constants))
        except Refused as exc:
            host.append(HostNode(index, name, node.op_type, str(exc)))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return Network(path, sha256, graph.name, opset, len(graph.node), tuple(layers), tuple(host))


# ------------------------------------------------------------------------- the model's facts

def _value_infos(model) -> tuple[dict[str, tuple[int | str | None, ...] | None], dict[str, int]]:
    """Value name -> shape (a symbolic dim by its name, None for an unknown one; None for no
    shape at all), and elem type."""
    g = model.graph
    shapes: dict[str, tuple[int | None, ...] | None] = {}
    dtypes: dict[str, int] = {}
    for vi in (*g.input, *g.value_info, *g.output):
        t = vi.type.tensor_type
        dtypes[vi.name] = t.elem_type
        shapes[vi.name] = (tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                 for d in t.shape.dim)
                           if t.HasField("shape") else None)
    for init in g.initializer:
        shapes[init.name] = tuple(init.dims)
        dtypes[init.name] = init.data_type
    return shapes, dtypes


def _constants(model) -> dict[str, np.ndarray]:
    """Initializers and Constant nodes' values (those stored inline)."""
    from onnx import numpy_helper

    out: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        if init.data_location != 1:  # not EXTERNAL
            try:
                out[init.name] = numpy_helper.to_array(init)
            except Exception:  # noqa: BLE001 (a value we cannot read is not a constant to us)
                pass
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    try:
                        out[node.output[0]] = numpy_helper.to_array(a.t)
                    except Exception:  # noqa: BLE001
                        pass
    return out


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list):
            v = tuple(v)
        out[a.name] = v
    return out


def _input(node, i: int) -> str:
    return node.input[i] if i < len(node.input) else ""


def _shape(name: str, shapes: dict, what: str) -> tuple[int, ...]:
    shape = shapes.get(name)
    if shape is None:
        raise Refused(f"{what} {name!r} has no inferred shape")
    if any(not isinstance(d, int) or d < 1 for d in shape):
        text = "x".join("?" if d is None else str(d) for d in shape)
        named = sorted({d for d in shape if isinstance(d, str)})
        hint = f"; fix {', '.join(named)} with --dim {named[0]}=VALUE" if named else ""
        raise Refused(f"{what} {name!r} has a shape that is not constant ({text}){hint}")
    return tuple(int(d) for d in shape)


# ------------------------------------------------------------------------- one node

def _layer(index: int, name: str, node, shapes: dict, dtypes: dict, constants: dict) -> Layer:
    op_type = node.op_type
    ia, ib = _OPERANDS[op_type]
    a_name, b_name, y_name = _input(node, ia), _input(node, ib), node.output[0] if node.output else ""
    if not a_name or not b_name or not y_name:
        raise Refused("a multiplied input or the output is missing")
    a_shape = _shape(a_name, shapes, "input")
    b_shape = _shape(b_name, shapes, "input")
    integer = op_type in INTEGER
    if integer:
        for value in (a_name, b_name):
            dt = dtypes.get(value, 0)
            if dt != _INT8:
                raise Refused(f"input {value!r} is {_DTYPES.get(dt, f'type {dt}')}: embedcsp's operators "
                              "multiply int8 by int8")
        for zp in _ZERO_POINTS[op_type]:
            value = _input(node, zp)
            if value and not (value in constants and not np.any(constants[value])):
                raise Refused(f"zero point {value!r} is not a constant 0 (only zero points of 0 are compiled)")
    attrs = _attrs(node)
    host = _host_work(op_type, node, attrs)
    try:
        if op_type in ("Conv", "ConvInteger", "QLinearConv"):
            op, shape, check = _conv(a_shape, b_shape, attrs)
        elif op_type == "Gemm":
            op, shape, check = _gemm(a_shape, b_shape, attrs)
        else:
            op, shape, check = _matmul(a_shape, b_shape)
    except BadInput as exc:  # sizes the operator constructors refuse
        raise Refused(str(exc)) from None
    a, b = op.inputs
    y = op.output
    y_shape = shapes.get(y_name)
    if y_shape is not None and not all(isinstance(d, int) and d > 0 for d in y_shape):
        y_shape = None
    if y_shape is not None and math.prod(y_shape) != y.size:
        raise Refused(f"the inferred output shape {list(y_shape)} does not hold the operator's "
                      f"{list(y.shape)}")
    onnx_y = _output_shape(op, check, a_shape, b_shape, y_shape)
    for t, s in ((a, a_shape), (b, b_shape)):
        if math.prod(s) != t.size:  # a bug here, not the user's: say so clearly anyway
            raise EmbedcspError(f"{name}: operator tensor {t.name} {list(t.shape)} is no view of {list(s)}")
    return Layer(index, name, op_type, op, integer,
                 ((a.name, a_name), (b.name, b_name), (y.name, y_name)),
                 ((a.name, a_shape), (b.name, b_shape), (y.name, onnx_y)), shape, host, check)


def _output_shape(op: Operator, check: IntegerCheck, a_shape, b_shape, y_shape) -> tuple[int, ...]:
    if y_shape is not None:
        return tuple(int(d) for d in y_shape)
    return op.output.shape  # no inferred shape: the operator's own is a view of the same elements


def _host_work(op_type: str, node, attrs: dict) -> tuple[str, ...]:
    """What the host does around the int32 sum the program computes."""
    work = []
    if op_type == "Conv" and _input(node, 2):
        work.append(f"bias {_input(node, 2)!r} added")
    if op_type == "Gemm":
        alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
        if alpha != 1.0:
            work.append(f"alpha {alpha:g} scaling")
        if _input(node, 2):
            work.append(f"C {_input(node, 2)!r} added" + (f" with beta {beta:g}" if beta != 1.0 else ""))
    if op_type in ("QLinearConv", "QLinearMatMul"):
        if op_type == "QLinearConv" and _input(node, 8):
            work.append(f"bias {_input(node, 8)!r} added")
        work.append("requantization (x_scale * w_scale / y_scale, y_zero_point)")
    return tuple(work)


def _conv(x: tuple[int, ...], w: tuple[int, ...], attrs: dict) -> tuple[Operator, str, IntegerCheck]:
    rank = len(x) - 2
    if rank == 3:
        raise Refused("3-D convolution (a 5-D input): embedcsp compiles 1-D and 2-D convs")
    if rank not in (1, 2) or len(w) != len(x):
        raise Refused(f"a conv of input {list(x)} and weight {list(w)} is neither 1-D nor 2-D")
    groups = int(attrs.get("group", 1))
    n, c, spatial = x[0], x[1], x[2:]
    k, cg, kernel = w[0], w[1], w[2:]
    if tuple(attrs.get("kernel_shape", kernel)) != tuple(kernel):
        raise Refused(f"kernel_shape {list(attrs['kernel_shape'])} is not the weight's {list(kernel)}")
    if groups < 1 or cg * groups != c or k % groups:
        raise Refused(f"group={groups} does not fit C={c}, K={k} and {cg} channels per filter")
    strides = tuple(attrs.get("strides", (1,) * rank))
    dilations = tuple(attrs.get("dilations", (1,) * rank))
    if len(strides) != rank or len(dilations) != rank:
        raise Refused(f"strides {list(strides)} or dilations {list(dilations)} do not have {rank} values")
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = tuple(attrs.get("pads", (0,) * (2 * rank)))
        if len(pads) != 2 * rank:
            raise Refused(f"pads {list(pads)} do not have {2 * rank} values")
        begin, end = pads[:rank], pads[rank:]
    elif auto_pad == "VALID":
        begin = end = (0,) * rank
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, st, kk, d in zip(spatial, strides, kernel, dilations):
            total = max(0, (-(-size // st) - 1) * st + (kk - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        begin, end = tuple(begin), tuple(end)
    else:
        raise Refused(f"auto_pad {auto_pad!r} is none of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    if rank == 1:  # the 2-D conv of height 1: [N, C, L] is [N, C, 1, L]
        spatial, kernel = (1, *spatial), (1, *kernel)
        strides, dilations, begin, end = (1, *strides), (1, *dilations), (0, *begin), (0, *end)
    op = conv2d_general(n, c, spatial[0], spatial[1], k, kernel[0], kernel[1], groups=groups,
                        stride=(strides[0], strides[1]), dilation=(dilations[0], dilations[1]),
                        pads=(begin[0], end[0], begin[1], end[1]))
    text = (f"conv{rank}d N={n} C={c} {'x'.join(map(str, x[2:]))} K={k} kernel {'x'.join(map(str, w[2:]))}"
            + (f" groups={groups}" if groups > 1 else "")
            + (f" stride={'x'.join(map(str, strides[-rank:]))}" if set(strides) != {1} else "")
            + (f" dilation={'x'.join(map(str, dilations[-rank:]))}" if set(dilations) != {1} else "")
            + (f" pads={','.join(map(str, (*begin[-rank:], *end[-rank:])))}" if any((*begin, *end)) else "")
            + (f" ({auto_pad})" if auto_pad != "NOTSET" else ""))
    check = IntegerCheck("ConvInteger", tuple((a, attrs[a]) for a in _CONV_ATTRS if a in attrs))
    return op, text, check


_GEMM_STATEMENTS = {
    (False, True): "C[m,n] += A[m,k] * B[n,k]",
    (True, False): "C[m,n] += A[k,m] * B[k,n]",
    (True, True): "C[m,n] += A[k,m] * B[n,k]",
}


def _gemm(a: tuple[int, ...], b: tuple[int, ...], attrs: dict) -> tuple[Operator, str, IntegerCheck]:
    if len(a) != 2 or len(b) != 2:
        raise Refused(f"Gemm of {list(a)} and {list(b)}: Gemm multiplies 2-D tensors")
    ta, tb = bool(attrs.get("transA", 0)), bool(attrs.get("transB", 0))
    m, k = (a[1], a[0]) if ta else a
    k2, n = (b[1], b[0]) if tb else b
    if k != k2:
        raise Refused(f"Gemm of {list(a)} (transA={int(ta)}) and {list(b)} (transB={int(tb)}): "
                      f"reductions {k} and {k2} differ")
    op = gemm(m, n, k) if not (ta or tb) else einsum(_GEMM_STATEMENTS[(ta, tb)], {"m": m, "n": n, "k": k})
    text = f"gemm M={m} N={n} K={k}" + (" A transposed" if ta else "") + (" B transposed" if tb else "")
    return op, text, IntegerCheck("MatMulInteger", (), (ta, tb))


def reference_operator(op: Operator) -> Operator:
    """The operator a family's fixed (reference) mapping compiles for `op`: a transposed Gemm
    is the plain GEMM of the same M, N, K, since that mapping packs both inputs on the host
    anyway and a transpose is only another order of packing; any other operator is itself."""
    if op.kind == "einsum" and op.statement() in _GEMM_STATEMENTS.values():
        e = op.extents
        return gemm(e["m"], e["n"], e["k"])
    return op


def _matmul(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[Operator, str, IntegerCheck]:
    if not a or not b:
        raise Refused("MatMul of a scalar")
    a2 = (1, *a) if len(a) == 1 else a  # a vector is one row, or one column
    b2 = (*b, 1) if len(b) == 1 else b
    (m, k), (k2, n) = a2[-2:], b2[-2:]
    if k != k2:
        raise Refused(f"MatMul of {list(a)} and {list(b)}: reductions {k} and {k2} differ")
    batch_a, batch_b = a2[:-2], b2[:-2]
    try:
        batch = np.broadcast_shapes(batch_a, batch_b)
    except ValueError:
        raise Refused(f"MatMul batch dims {list(batch_a)} and {list(batch_b)} do not broadcast") from None
    ba, bb, bt = math.prod(batch_a), math.prod(batch_b), math.prod(batch)
    check = IntegerCheck("MatMulInteger", ())
    if bb == 1:  # A's batch dims (if any) are more rows
        text = f"matmul M={m} N={n} K={k}" + (f" (batch {'x'.join(map(str, batch_a))} folded into M)"
                                             if ba > 1 else "")
        return gemm(ba * m, n, k), text, check
    if ba == 1:  # B's batch dims only: every batch reads all of A
        op = einsum("C[b,m,n] += A[m,k] * B[b,k,n]", {"b": bb, "m": m, "n": n, "k": k})
        return op, f"matmul M={m} N={n} K={k}, batch {'x'.join(map(str, batch_b))} of B only", check
    if ba == bb == bt:
        return bmm(bt, m, n, k), f"batched matmul b={'x'.join(map(str, batch))} M={m} N={n} K={k}", check
    raise Refused(f"MatMul batch dims {list(batch_a)} and {list(batch_b)} broadcast one input across the "
                  "other's batch: not one batched operator")


# ------------------------------------------------------------------------- the check model

def check_model(layer: Layer):
    """A one-node ONNX model (inputs "a", "b" int8 in the node's shapes; output "y" int32) that
    computes the layer's int32 sums with onnxruntime's own ConvInteger or MatMulInteger, from
    the node's attributes as the model states them, zero points 0."""
    onnx = onnx_module()
    from onnx import TensorProto, helper

    a, b, _ = (t for t, _ in layer.onnx_shapes)
    check = layer.check
    nodes, feeds = [], ["a", "b"]
    for i, flag in enumerate(check.transpose):
        if flag:
            nodes.append(helper.make_node("Transpose", [feeds[i]], [f"{feeds[i]}_t"], perm=[1, 0]))
            feeds[i] = f"{feeds[i]}_t"
    nodes.append(helper.make_node(check.op_type, feeds, ["y"], **{k: (list(v) if isinstance(v, tuple) else v)
                                                                 for k, v in check.attributes}))
    graph = helper.make_graph(
        nodes, f"{layer.name}-check",
        [helper.make_tensor_value_info("a", TensorProto.INT8, list(layer.onnx_shape(a))),
         helper.make_tensor_value_info("b", TensorProto.INT8, list(layer.onnx_shape(b)))],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", CHECK_OPSET)],
                              producer_name="embedcsp")
    model.ir_version = CHECK_IR_VERSION
    del onnx
    return model


def safe_name(layer: Layer) -> str:
    """The layer's bundle directory: its graph position and a file-safe form of its name."""
    return f"{layer.index:03d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', layer.name).strip('._') or layer.op_type}"
