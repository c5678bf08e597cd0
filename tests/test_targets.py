"""The family seam: the registry, entry points, and the protocol the core relies on."""

from __future__ import annotations

import inspect
import sys
from importlib.metadata import EntryPoint

import pytest

from embedcsp.accelerator import accelerator_from_dict
from embedcsp.errors import IsaError
from embedcsp.targets import registry
from embedcsp.targets.family import Family
from embedcsp.targets.vta import FAMILY as VTA

DOC = {"accelerator": {"name": "x", "family": "vta"},
       "vta_config": {"LOG_INP_WIDTH": 3, "LOG_WGT_WIDTH": 3, "LOG_ACC_WIDTH": 5, "LOG_BATCH": 0,
                      "LOG_BLOCK_IN": 4, "LOG_BLOCK_OUT": 4, "LOG_UOP_BUFF_SIZE": 15,
                      "LOG_INP_BUFF_SIZE": 15, "LOG_WGT_BUFF_SIZE": 18, "LOG_ACC_BUFF_SIZE": 17},
       "intrinsic": {"statement": "acc[b,o] += inp[b,i] * wgt[o,i]",
                     "lanes": {"b": "BATCH", "o": "BLOCK_OUT", "i": "BLOCK_IN"}}}


def test_vta_implements_every_method_of_the_protocol():
    wanted = [n for n, v in vars(Family).items() if inspect.isfunction(v) and not n.startswith("_")]
    wanted += list(Family.__annotations__)
    assert {"load", "build", "execute", "cost", "roofline"} <= set(wanted)
    for name in wanted:
        assert hasattr(VTA, name), f"VtaFamily lacks {name}"
        if name in vars(Family) and inspect.isfunction(vars(Family)[name]):
            want = list(inspect.signature(vars(Family)[name]).parameters)[1:]
            assert list(inspect.signature(getattr(VTA, name)).parameters)[:len(want)] == want, name


def test_an_unknown_family_names_the_known_ones():
    with pytest.raises(IsaError, match=r"unknown accelerator family 'npu'; known: .*vta"):
        accelerator_from_dict({**DOC, "accelerator": {"name": "x", "family": "npu"}}, "x.toml")


@pytest.fixture
def fake_entry_points(monkeypatch, tmp_path):
    """Distributions that declare families in the 'embedcsp.targets' group, for one test."""
    declared: list[EntryPoint] = []

    def entry_points(group):
        assert group == registry.ENTRY_POINT_GROUP
        return declared

    monkeypatch.setattr(registry, "entry_points", entry_points)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.registered.cache_clear()
    registry.family.cache_clear()
    yield declared, tmp_path
    registry.registered.cache_clear()
    registry.family.cache_clear()
    sys.modules.pop("thirdparty_family", None)


def test_a_third_party_family_is_found_through_its_entry_point(fake_entry_points):
    declared, where = fake_entry_points
    (where / "thirdparty_family.py").write_text(
        "from embedcsp.targets.vta import VtaFamily\n"
        "class Mine(VtaFamily):\n"
        "    name = 'mine'\n"
        "FAMILY = Mine()\n")
    declared.append(EntryPoint("mine", "thirdparty_family:FAMILY", registry.ENTRY_POINT_GROUP))
    acc = accelerator_from_dict({**DOC, "accelerator": {"name": "x", "family": "mine"}}, "x.toml")
    assert acc.family == "mine" and registry.family("mine").name == "mine"


def test_an_entry_point_cannot_replace_a_builtin_or_lie_about_its_name(fake_entry_points):
    declared, where = fake_entry_points
    (where / "thirdparty_family.py").write_text("class F:\n    name = 'other'\nFAMILY = F()\n")
    declared += [EntryPoint("vta", "thirdparty_family:FAMILY", registry.ENTRY_POINT_GROUP),
                 EntryPoint("liar", "thirdparty_family:FAMILY", registry.ENTRY_POINT_GROUP),
                 EntryPoint("broken", "no_such_module:FAMILY", registry.ENTRY_POINT_GROUP)]
    assert registry.family("vta") is VTA
    with pytest.raises(IsaError, match="names itself 'other'"):
        registry.family("liar")
    with pytest.raises(IsaError, match="cannot be loaded"):
        registry.family("broken")


def test_every_package_of_the_source_tree_is_in_the_distribution():
    """pyproject.toml lists the packages one by one: a package left out imports from a source
    checkout (and an editable install) but not from a wheel."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    text = (root / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(embedcsp[\w.]*)"', text.split("packages = [", 1)[1].split("]", 1)[0]))
    tree = {".".join(p.parent.relative_to(root).parts) for p in (root / "embedcsp").rglob("__init__.py")}
    assert tree <= listed, f"not in pyproject.toml's packages: {sorted(tree - listed)}"
