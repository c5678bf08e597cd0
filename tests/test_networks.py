"""The network suites: tables load, shapes match their sources, counts add up, one layer per suite verifies."""

from __future__ import annotations

import pytest

import embedcsp
from embedcsp import bench, networks
from embedcsp.errors import BadInput
from embedcsp.pipeline import Options

# Layers per network as the sources count them (see each table's header).
TOTALS = {"resnet18": 21, "resnet50": 54, "mobilenetv2": 53, "bert-base": 96, "mlperf-tiny": 48}
SMALL = {"resnet18": "fc", "resnet50": "fc", "mobilenetv2": "pw960-320-7", "bert-base": "attn-qk",
         "mlperf-tiny": "resnet8-s3-c1"}


@pytest.mark.parametrize("net", networks.NETWORKS)
def test_every_table_loads_with_distinct_shapes_and_its_layer_count(net: str) -> None:
    layers = networks.layers(net)
    ops = [layer.operator() for layer in layers]  # every row builds an operator
    assert len({op.describe() for op in ops}) == len(layers)  # a repeated layer is one row, solved once
    assert networks.layer_total(net) == TOTALS[net]
    assert bench.names_for(net) == [layer.name for layer in layers]


def test_resnet18_is_vtas_table() -> None:
    c1 = networks.lookup("resnet18.C1")
    assert c1.params == {"n": 1, "c": 3, "h": 224, "w": 224, "k": 64, "r": 7, "s": 7, "stride": 2, "pad": 3}
    assert c1.out_hw() == (112, 112)
    c11 = networks.lookup("resnet18.C11")
    assert (c11.params["c"], c11.params["k"], c11.out_hw(), c11.count) == (512, 512, (7, 7), 3)
    assert networks.lookup("resnet18.C4").out_hw() == (28, 28)  # the 1x1 stride-2 shortcut
    fc = networks.lookup("resnet18.fc").operator()
    assert fc.kind == "gemm" and fc.param_dict == {"M": 1, "N": 1000, "K": 512}


def test_mobilenetv2_depthwise_layers() -> None:
    dw = networks.lookup("mobilenetv2.dw32-s1-112")
    assert dw.out_hw() == (112, 112)
    assert dw.params["groups"] == dw.params["c"] == dw.params["k"] == 32
    dims = {d.name: d.extent for d in dw.operator().dims}
    assert (dims["g"], dims["c"], dims["k"]) == (32, 1, 1)
    depthwise = [layer for layer in networks.layers("mobilenetv2") if "groups" in layer.params]
    assert len(depthwise) == 10 and sum(layer.count for layer in depthwise) == 17
    assert all(layer.params["groups"] == layer.params["c"] == layer.params["k"] for layer in depthwise)
    assert networks.lookup("mobilenetv2.conv0").params["c"] == 3
    assert networks.lookup("mobilenetv2.dw96-s2-112").out_hw() == (56, 56)


def test_bert_base_attention_and_projections() -> None:
    qk = networks.lookup("bert-base.attn-qk").operator()
    av = networks.lookup("bert-base.attn-av").operator()
    assert qk.param_dict == {"b": 12, "m": 128, "n": 128, "k": 64}
    assert av.param_dict == {"b": 12, "m": 128, "n": 64, "k": 128}
    assert networks.lookup("bert-base.proj").count == 4 * 12
    assert networks.lookup("bert-base.ffn-up").operator().param_dict == {"M": 128, "N": 3072, "K": 768}


def test_mlperf_tiny_same_padding() -> None:
    assert networks.lookup("mlperf-tiny.dscnn-conv0").out_hw() == (25, 5)
    assert networks.lookup("mlperf-tiny.resnet8-s2-c1").out_hw() == (16, 16)
    assert networks.lookup("mlperf-tiny.mbv1-dw128-s2-6").out_hw() == (3, 3)


def test_lookup_errors_are_bad_input() -> None:
    with pytest.raises(BadInput, match="no layer 'C99'"):
        networks.lookup("resnet18.C99")
    with pytest.raises(BadInput, match="unknown network"):
        networks.layers("vgg16")
    with pytest.raises(BadInput, match="not a network layer"):
        networks.lookup("C2")
    assert networks.lookup("c2", "resnet18").name == "resnet18.C2"


def test_malformed_tables_are_refused() -> None:
    head = "name,op,count,shape\n"
    with pytest.raises(BadInput, match="unknown conv key 'x'"):
        networks.parse_table("t", head + "a,conv,1,n=1 c=1 h=4 w=4 k=1 r=1 s=1 x=2\n")
    with pytest.raises(BadInput, match="needs k"):
        networks.parse_table("t", head + "a,gemm,1,m=1 n=2\n")
    with pytest.raises(BadInput, match="count"):
        networks.parse_table("t", head + "a,gemm,0,m=1 n=2 k=3\n")


def test_bench_names_in_a_network_suite() -> None:
    cfg = bench.BenchConfig(suite="bert-base", only=("attn-av", "bert-base.attn-qk", "gemm-server-1"))
    assert cfg.names() == ["bert-base.attn-av", "bert-base.attn-qk", "gemm-server-1"]
    with pytest.raises(BadInput):
        bench.BenchConfig(suite="bert-base", only=("nope",)).names()


def test_network_totals_weight_cycles_by_count() -> None:
    rows = [{"name": "a", "verified": True, "ref_verified": True, "cycles": 10, "ref_cycles": 20, "speedup": 2.0},
            {"name": "b", "verified": True, "ref_verified": True, "cycles": 5, "ref_cycles": 5, "speedup": 1.0}]
    t = bench.network_totals(rows, {"a": 3, "b": 2})
    assert (t["network_layers"], t["network_cycles"], t["ref_network_cycles"]) == (5, 40, 70)
    assert t["network_speedup"] == pytest.approx(70 / 40)
    rows[1] = {"name": "b", "verified": False}
    assert bench.network_totals(rows, {"a": 3, "b": 2})["network_cycles"] is None


@pytest.mark.parametrize("net", networks.NETWORKS)
def test_one_small_layer_per_suite_verifies_on_vta(net: str) -> None:
    op = networks.lookup(SMALL[net], net).operator()
    outcome = embedcsp.solve_and_verify(op, embedcsp.load_accelerator(None), Options(time_limit=10), seed=1)
    assert outcome.verification.ok


@pytest.mark.parametrize("net", networks.NETWORKS)
def test_every_layer_has_a_reference_on_vta(net: str) -> None:
    """Grouped and depthwise layers included: the fixed conv once per group, in the direct form."""
    from embedcsp.csp import solve_embedding
    from embedcsp.targets.vta.reference import reference_pins

    acc = embedcsp.load_accelerator(None)
    for layer in networks.layers(net):
        op = layer.operator()
        emb, _ = solve_embedding(op, acc, pins=reference_pins(op))
        assert emb.form == ("direct" if layer.op == "conv" else "matrix"), layer.name
        groups = layer.params.get("groups", 1)
        assert [lp.dim for lp in emb.loops_of("bat")] == (["g"] if groups > 1 else ["b"] if layer.op == "bmm" else [])
