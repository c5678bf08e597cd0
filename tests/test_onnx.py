"""`embedcsp compile MODEL.onnx`: ONNX models built here with onnx.helper (no downloads), every
supported layer verified bit-exact and equal to onnxruntime, distinct shapes solved once, the
nodes left to the host counted by type, and bad input as one line with exit 2 (docs/onnx.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from embedcsp.cli import app
from embedcsp.errors import BadInput
from embedcsp.network import NetworkConfig, compile_network, ort_check
from embedcsp.onnx_import import check_model, import_model, translate
from embedcsp.reference import Epilogue, accumulate, random_inputs

RUNNER = CliRunner()
F, I8, I32 = TensorProto.FLOAT, TensorProto.INT8, TensorProto.INT32


class Graph:
    """A small ONNX graph under construction: nodes, initializers, typed graph inputs."""

    def __init__(self, name: str = "g"):
        self.name, self.nodes, self.inits, self.inputs, self.outputs = name, [], [], [], []
        self.rng = np.random.default_rng(0)

    def input(self, name: str, dtype: int, shape) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def weight(self, name: str, shape, dtype=np.float32) -> str:
        values = (self.rng.standard_normal(shape).astype(np.float32) if dtype == np.float32
                  else self.rng.integers(-4, 4, shape).astype(dtype))
        self.inits.append(numpy_helper.from_array(values, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: str, name: str, w_shape, op: str = "Conv", **attrs) -> str:
        dtype = np.int8 if op == "ConvInteger" else np.float32
        return self.node(op, [x, self.weight(f"{name}_w", w_shape, dtype)], name, **attrs)

    def output(self, name: str, dtype: int = F) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, dtype, None))

    def model(self):
        g = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m

    def save(self, path: Path) -> Path:
        onnx.save(self.model(), str(path))
        return path


def resnet_like() -> Graph:
    """The layers the issue names: 3x3 pad 1, strided 1x1, depthwise, dilated with asymmetric
    pads, two convs of one shape, Gemm transB=1, batched MatMul, ConvInteger, MatMulInteger,
    and a Relu and an Add for the host."""
    g = Graph("resnet_like")
    x = g.input("x", F, [1, 16, 8, 8])
    c1 = g.conv(x, "conv3x3", (16, 16, 3, 3), pads=[1, 1, 1, 1])
    r1 = g.node("Relu", [c1], "relu")
    c2 = g.conv(r1, "down1x1", (32, 16, 1, 1), strides=[2, 2])
    dw = g.conv(c2, "depthwise", (32, 1, 3, 3), group=32, pads=[1, 1, 1, 1])
    dil = g.conv(dw, "dilated", (32, 32, 3, 3), dilations=[2, 2], pads=[2, 1, 2, 3])  # top, left, bottom, right
    a = g.conv(dil, "proj_a", (32, 32, 1, 1))
    b = g.conv(dil, "proj_b", (32, 32, 1, 1))  # the same shape as proj_a: solved once
    add = g.node("Add", [a, b], "add")
    flat = g.node("Flatten", [add], "flatten")
    g.output(g.node("Gemm", [flat, g.weight("fc_w", (10, 512)), g.weight("fc_b", (10,))], "fc", transB=1))
    q = g.input("q", F, [4, 6, 16])
    g.output(g.node("MatMul", [q, g.weight("k", (4, 16, 8))], "attention"))
    xi = g.input("xi", I8, [1, 4, 7, 9])
    g.output(g.conv(xi, "conv_int", (8, 4, 3, 3), op="ConvInteger", pads=[0, 1, 1, 0], strides=[1, 2]), I32)
    ai = g.input("ai", I8, [2, 5, 12])
    g.output(g.node("MatMulInteger", [ai, g.weight("mi_w", (12, 16), np.int8)], "matmul_int"), I32)
    return g


def invoke(*args: str):
    return RUNNER.invoke(app, ["compile", *args])


def test_resnet_like_block_compiles_verified_and_equal_to_onnxruntime(tmp_path):
    model = resnet_like().save(tmp_path / "net.onnx")
    out = tmp_path / "out"
    r = invoke(str(model), "--out", str(out), "--jobs", "2")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    doc = json.loads((out / "network.json").read_text())
    rows = {row["name"]: row for row in doc["layers"]}
    assert list(rows) == ["conv3x3", "down1x1", "depthwise", "dilated", "proj_a", "proj_b", "fc", "attention",
                          "conv_int", "matmul_int"]
    assert all(row["verified"] is True for row in rows.values())
    assert all(row["ort"] == "equal" for row in rows.values()), [row.get("ort_detail") for row in rows.values()]
    s = doc["summary"]
    assert (s["layers"], s["verified"], s["distinct_shapes"], s["ort_equal"]) == (10, 10, 9, 10)
    assert s["host_by_type"] == {"Add": 1, "Flatten": 1, "Relu": 1}
    # Each attribute stated as a statement.
    assert rows["dilated"]["statement"] == "out[n,k,p,q] += data[n,c,p+2*r-2,q+2*s-1] * weight[k,c,r,s]"
    assert rows["depthwise"]["operator"].endswith("n=1 g=32 k=1 p=4 q=4 c=1 r=3 s=3")
    assert rows["down1x1"]["operator"].startswith("conv2d N=1 C=16 H=8 W=8 K=32 R=1 S=1")
    assert rows["fc"]["statement"] == "C[m,n] += A[m,k] * B[n,k]" and rows["fc"]["host_work"] == ["C 'fc_b' added"]
    assert rows["attention"]["statement"] == "C[b,m,n] += A[b,m,k] * B[b,k,n]"
    assert rows["matmul_int"]["operator"] == "gemm M=10 N=16 K=12"  # A's batch folded into M
    assert rows["conv_int"]["integer"] is True and rows["conv3x3"]["integer"] is False
    # One bundle per layer; the shared shape's is the same files.
    assert rows["proj_b"]["shared_with"] == "proj_a"
    for row in rows.values():
        assert (Path(row["bundle"]) / "manifest.json").exists()
    a, b = Path(rows["proj_a"]["bundle"]), Path(rows["proj_b"]["bundle"])
    assert (a / "dram.bin").read_bytes() == (b / "dram.bin").read_bytes()
    run = RUNNER.invoke(app, ["run", str(b)])
    assert run.exit_code == 0 and "verified" in run.stdout
    # The text report: the table, the note on float layers, the totals, the host's nodes by type.
    assert "10 verified bit-exact" in r.stdout and "onnxruntime 10 of 10 layers equal" in r.stdout
    assert "host       Add 1, Flatten 1, Relu 1 (3 nodes left to the host)" in r.stdout
    assert "float layers are compiled as int8 x int8 -> int32" in r.stdout
    assert "| proj_b |" in (out / "network.md").read_text()


def _variants() -> Graph:
    """Attribute forms beyond the block: auto_pad, 1-D conv, QLinear nodes, transA, batch of B only,
    a vector operand, stride with SAME_LOWER."""
    g = Graph("variants")
    x = g.input("x", F, [1, 8, 9, 7])
    g.output(g.conv(x, "same_upper", (8, 8, 3, 2), auto_pad="SAME_UPPER", strides=[2, 2]))
    g.output(g.conv(x, "same_lower", (8, 8, 2, 3), auto_pad="SAME_LOWER"))
    g.output(g.conv(x, "valid", (4, 8, 3, 3), auto_pad="VALID", dilations=[1, 2]))
    s = g.input("seq", F, [1, 8, 20])
    g.output(g.conv(s, "conv1d", (16, 4, 3), group=2, pads=[2, 1], strides=[2]))
    xq = g.input("xq", I8, [1, 4, 6, 6])
    zero = "zp"
    g.inits += [numpy_helper.from_array(np.array(0, np.int8), zero),
                numpy_helper.from_array(np.array(0.5, np.float32), "scale")]
    wq = g.weight("wq", (8, 4, 3, 3), np.int8)
    g.output(g.node("QLinearConv", [xq, "scale", zero, wq, "scale", zero, "scale", zero], "qconv",
                    pads=[1, 1, 1, 1]), I8)
    aq = g.input("aq", I8, [3, 20])
    g.output(g.node("QLinearMatMul", [aq, "scale", zero, g.weight("bq", (20, 5), np.int8), "scale", zero,
                                      "scale", zero], "qmatmul"), I8)
    at = g.input("at", F, [12, 5])
    g.output(g.node("Gemm", [at, g.weight("gt", (7, 12))], "gemm_tt", transA=1, transB=1, alpha=0.5))
    v = g.input("v", F, [16])
    g.output(g.node("MatMul", [v, g.weight("bb", (3, 16, 4))], "batch_of_b"))
    return g


def test_attributes_state_what_onnxruntime_computes():
    """Without solving: each layer's statement, on random int8 inputs, equals onnxruntime's
    ConvInteger/MatMulInteger with the node's own attributes (auto_pad, 1-D, transposes...)."""
    net = translate(onnx.shape_inference.infer_shapes(_variants().model()))
    assert [h.name for h in net.host] == []
    names = {layer.name: layer for layer in net.layers}
    assert names["same_upper"].operator.output.shape[-2:] == (5, 4)  # ceil(9/2), ceil(7/2)
    # top, left, bottom, right: an odd total puts the extra at the end (UPPER) or the beginning (LOWER)
    assert "pads=1,0,1,1 (SAME_UPPER)" in names["same_upper"].shape
    assert "pads=1,1,0,1 (SAME_LOWER)" in names["same_lower"].shape
    assert names["conv1d"].operator.extents["g"] == 2 and names["conv1d"].operator.extents["p"] == 1
    assert names["gemm_tt"].operator.statement() == "C[m,n] += A[k,m] * B[n,k]"
    assert names["gemm_tt"].host == ("alpha 0.5 scaling",)
    assert names["batch_of_b"].operator.statement() == "C[b,m,n] += A[m,k] * B[b,k,n]"
    assert "requantization" in names["qconv"].host[0]
    for layer in net.layers:
        op = layer.operator
        inputs = random_inputs(op, 3)
        sums = accumulate(op, inputs)
        res = {"inputs": inputs, "sums": sums, "output": sums, "epilogue": Epilogue("int32")}
        assert ort_check(layer, res)["ort"] == "equal", (layer.name, ort_check(layer, res))
        # and a wrong sum is caught
        bad = {**res, "sums": sums + (np.arange(sums.size).reshape(sums.shape) == 0)}
        assert ort_check(layer, bad)["ort"] == "differs"


def test_variants_compile_and_verify(tmp_path):
    result = compile_network(NetworkConfig(_variants().save(tmp_path / "v.onnx"), jobs=2))
    assert result.ok, [(r["name"], r.get("error"), r.get("ort_detail")) for r in result.rows]
    assert all(r["verified"] and r["ort"] == "equal" for r in result.rows)
    assert result.summary["layers"] == 8


def test_refusals_are_host_nodes_with_reasons(tmp_path):
    g = Graph("refused")
    x5 = g.input("x5", F, [1, 4, 4, 4, 4])
    g.output(g.conv(x5, "conv3d", (4, 4, 1, 1, 1)))
    xs = g.input("xs", F, ["N", 4, 6, 6])
    g.output(g.conv(xs, "symbolic", (4, 4, 1, 1)))
    xi = g.input("xi", I8, [1, 4, 6, 6])
    g.inits.append(numpy_helper.from_array(np.array(3, np.int8), "three"))
    g.output(g.node("ConvInteger", [xi, g.weight("wi", (4, 4, 1, 1), np.int8), "three"], "zero_point"), I32)
    xu = g.input("xu", TensorProto.UINT8, [2, 4])
    g.output(g.node("MatMulInteger", [xu, g.weight("wu", (4, 3), np.uint8)], "uint8"), I32)
    a, b = g.input("a", F, [2, 1, 3, 4]), g.input("b", F, [1, 5, 4, 2])
    g.output(g.node("MatMul", [a, b], "broadcast"))
    g.output(g.conv(g.input("x", F, [1, 4, 6, 6]), "fine", (8, 4, 3, 3)))
    net = translate(onnx.shape_inference.infer_shapes(g.model()))
    reasons = {h.name: h.reason for h in net.host}
    assert [layer.name for layer in net.layers] == ["fine"]
    assert "3-D convolution" in reasons["conv3d"]
    assert "not constant (Nx4x6x6); fix N with --dim N=VALUE" in reasons["symbolic"]
    assert "zero point 'three' is not a constant 0" in reasons["zero_point"]
    assert "uint8" in reasons["uint8"]
    assert "broadcast one input across the other's batch" in reasons["broadcast"]
    model = g.save(tmp_path / "r.onnx")
    r = invoke(str(model), "--jobs", "1")
    assert r.exit_code == 0, r.stderr
    assert "host       Conv 2, ConvInteger 1, MatMul 1, MatMulInteger 1 (5 nodes left to the host)" in r.stdout
    r = invoke(str(model), "--jobs", "1", "--dim", "N=2")  # the symbolic batch fixed: compiled
    assert r.exit_code == 0 and "host       Conv 1, ConvInteger 1, MatMul 1, MatMulInteger 1 (4 nodes" in r.stdout
    _one_line_exit_2(invoke(str(model), "--dim", "M=2"), "no graph input has a symbolic dim M")
    _one_line_exit_2(invoke(str(model), "--dim", "N"), "--dim wants NAME=VALUE")


def _one_line_exit_2(r, text: str) -> None:
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], r.stderr


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    _one_line_exit_2(invoke(str(tmp_path / "missing.onnx")), "no such file")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00 this is not a protobuf \x13\x37" * 3)
    _one_line_exit_2(invoke(str(junk)), "not an ONNX model")
    text = tmp_path / "text.onnx"
    text.write_text("hello")
    _one_line_exit_2(invoke(str(text)), "text.onnx")
    g = Graph("nothing")
    g.output(g.node("Relu", [g.input("x", F, [1, 4])], "relu"))
    _one_line_exit_2(invoke(str(g.save(tmp_path / "relu.onnx"))), "no node embedcsp compiles among its 1 (Relu 1)")
    g = Graph("only3d")
    g.output(g.conv(g.input("x", F, [1, 2, 2, 2, 2]), "c3", (2, 2, 1, 1, 1)))
    _one_line_exit_2(invoke(str(g.save(tmp_path / "c3.onnx"))), "3-D convolution")
    _one_line_exit_2(invoke(str(tmp_path / "relu.onnx"), "--jobs", "0"), "--jobs")
    with pytest.raises(BadInput):
        import_model(tmp_path)


def mobilenet_like() -> Graph:
    """A MobileNetV1-style stack at 32x32: a C=3 stride-2 stem, depthwise-separable blocks (two of
    them repeated shapes), global pooling and the classifier, with ReLUs on the host."""
    g = Graph("mobilenet_like")
    x = g.input("image", F, [1, 3, 32, 32])
    x = g.node("Relu", [g.conv(x, "stem", (16, 3, 3, 3), strides=[2, 2], pads=[1, 1, 1, 1])], "stem_relu")
    blocks = [(16, 32, 1), (32, 64, 2), (64, 64, 1), (64, 64, 1)]
    for i, (c, k, stride) in enumerate(blocks):
        x = g.conv(x, f"dw{i}", (c, 1, 3, 3), group=c, strides=[stride, stride], pads=[1, 1, 1, 1])
        x = g.node("Relu", [g.conv(g.node("Relu", [x], f"dw{i}_relu"), f"pw{i}", (k, c, 1, 1))], f"pw{i}_relu")
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x], "pool")], "flatten")
    g.output(g.node("Gemm", [x, g.weight("fc_w", (10, 64)), g.weight("fc_b", (10,))], "classifier", transB=1))
    return g


def test_mobilenet_like_network(tmp_path):
    model = mobilenet_like().save(tmp_path / "mobilenet.onnx")
    # The model runs as a whole in onnxruntime: it is a real network, not just a list of nodes.
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"image": np.zeros((1, 3, 32, 32), np.float32)})[0].shape == (1, 10)
    result = compile_network(NetworkConfig(model, out=tmp_path / "out", jobs=2))
    s = result.summary
    assert result.ok and s["layers"] == 10 and s["verified"] == 10 and s["ort_equal"] == 10
    assert s["distinct_shapes"] == 8  # dw3/pw3 repeat dw2/pw2
    assert s["host_by_type"] == {"Relu": 9, "Flatten": 1, "GlobalAveragePool": 1}
    rows = {r["name"]: r for r in result.rows}
    assert rows["stem"]["ref_cycles"] > 0 and rows["pw0"]["speedup"] is not None
    # The depthwise layers run in a placement beyond whole dims where the cycle model finds it
    # faster than the taps on BLOCK_IN (docs/placements.md), never slower than the reference.
    dw = [rows[f"dw{i}"] for i in range(4)]
    assert all(r["cycles"] <= r["ref_cycles"] for r in dw)
    assert {r["form"] for r in dw} <= {"banded", "block-diagonal", "matrix", "direct"}
    assert any(r["form"] in ("banded", "block-diagonal") for r in dw)
    assert (tmp_path / "out" / "network.md").exists()


def test_check_model_is_a_one_node_integer_model():
    net = translate(onnx.shape_inference.infer_shapes(resnet_like().model()))
    layer = next(x for x in net.layers if x.name == "dilated")
    m = check_model(layer)
    (node,) = m.graph.node
    assert node.op_type == "ConvInteger"
    assert {a.name: list(a.ints) for a in node.attribute} == {"dilations": [2, 2], "pads": [2, 1, 2, 3]}
    fc = check_model(next(x for x in net.layers if x.name == "fc"))
    assert [n.op_type for n in fc.graph.node] == ["Transpose", "MatMulInteger"]
