"""Where accelerator families are found (docs/targets.md).

A family is one package under `embedcsp/targets/` (or in a third party's own
distribution) exposing an object that implements `targets.Family`. The core
never imports a family by name: it asks this registry, which knows the
project's own families as entry-point strings and adds every entry point of
the `embedcsp.targets` group that installed distributions declare, e.g. in a
third party's pyproject.toml:

    [project.entry-points."embedcsp.targets"]
    mychip = "mychip_embedcsp:FAMILY"
"""

from __future__ import annotations

from functools import lru_cache
from importlib import import_module
from importlib.metadata import entry_points

from embedcsp.errors import IsaError

ENTRY_POINT_GROUP = "embedcsp.targets"

# The project's own families, as "module:attribute" like any entry point.
BUILTIN = {
    "vta": "embedcsp.targets.vta:FAMILY",
    "gemmini": "embedcsp.targets.gemmini:FAMILY",
    "tile": "embedcsp.targets.tile:FAMILY",
    "TEMPLATE": "embedcsp.targets.TEMPLATE:FAMILY",  # the family to copy (docs/template-family.md)
}


def _load(spec: str, name: str):
    module, _, attr = spec.partition(":")
    try:
        family = getattr(import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise IsaError(f"family {name!r} is registered as {spec!r}, which cannot be loaded ({exc})") from None
    if getattr(family, "name", None) != name:
        raise IsaError(f"family {name!r} ({spec}) names itself {getattr(family, 'name', None)!r}")
    return family


@lru_cache(maxsize=None)
def registered() -> dict[str, str]:
    """Family name -> "module:attribute", built-ins first; an entry point may not replace one."""
    found = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


@lru_cache(maxsize=None)
def family(name: str):
    """The family called `name`; IsaError naming the known ones if there is none."""
    specs = registered()
    if name not in specs:
        raise IsaError(f"unknown accelerator family {name!r}; known: {', '.join(sorted(specs))} "
                       f"(a package adds one through the {ENTRY_POINT_GROUP!r} entry-point group)")
    return _load(specs[name], name)
