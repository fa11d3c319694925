"""The folders are the layers: every import in ``xend_actors`` runs down (docs/architecture.md).

A part is a top-level module or package of ``xend_actors``. A part may import itself and
the parts of lower layers, never a higher layer nor another part of its own layer. The
client side (``client``, ``client_http``, ``xm``) stands apart: it may import only itself
and the shared values below, so ``xm`` never loads the daemon. Imports inside functions
and under ``TYPE_CHECKING`` count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "xend_actors"

LAYERS: list[set[str]] = [
    {"__init__", "errors"},
    {"sxp", "layered", "tally"},
    {"config", "store", "logs", "trace", "pidfile", "mac", "node", "actors",
     "limits"},
    {"access"},
    {"events"},
    {"hypervisor", "netscripts"},
    {"device", "console"},
    {"domain"},
    {"transfer"},
    {"pool"},
    {"web", "debug"},
    {"daemon"},
    {"cli"},
]
CLIENT_SIDE = {"client", "client_http", "xm"}
# What the client side shares with the daemon: values, no actors, no I/O.
SHARED_VALUES = {"xend_actors", "xend_actors.sxp", "xend_actors.errors", "xend_actors.mac",
                 "xend_actors.events", "xend_actors.events.event"}


def layer_of(part: str) -> int | None:
    for rank, parts in enumerate(LAYERS):
        if part in parts:
            return rank
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of xend_actors in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # "from xend_actors.x import y" may name the module y
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                      if (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")
                          ).with_suffix(".py").exists()]
    return [(line, name) for line, name in found
            if name == "xend_actors" or name.startswith("xend_actors.")]


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``, or None if it may."""
    mine, theirs = part_of(importer), part_of(imported)
    if mine == theirs:
        return None
    if mine in CLIENT_SIDE:
        if theirs in CLIENT_SIDE or imported in SHARED_VALUES:
            return None
        return "the client side may import only the shared values"
    if theirs in CLIENT_SIDE:
        return "the daemon never imports the client side"
    mine_rank, theirs_rank = layer_of(mine), layer_of(theirs)
    if mine_rank is None or theirs_rank is None:
        return "a part in no layer"
    if theirs_rank == mine_rank:
        return "parts of one layer do not import each other"
    if theirs_rank > mine_rank:
        return "an upward import"
    return None


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_layer() -> None:
    parts = {part_of(module_name(path)) for path in SOURCES} - CLIENT_SIDE
    unplaced = sorted(part for part in parts if layer_of(part) is None)
    assert not unplaced, f"in no layer (add them to LAYERS and docs/architecture.md): {unplaced}"
    assert {"hypervisor", "domain", "transfer", "web"} <= parts  # the walk found the package


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: module_name(path))
def test_imports_run_down(path: Path) -> None:
    importer = module_name(path)
    wrong = [f"{path.relative_to(PACKAGE.parent)}:{line}: {imported}: {why}"
             for line, imported in imports(path)
             if (why := violation(importer, imported))]
    assert not wrong, "\n".join(wrong)


def test_the_rule_catches_an_upward_import() -> None:
    assert violation("xend_actors.hypervisor.base", "xend_actors.device.config")
    assert violation("xend_actors.device.blkif", "xend_actors.console.hub")
    assert violation("xend_actors.xm.main", "xend_actors.domain.config")
    assert violation("xend_actors.domain.table", "xend_actors.xm.main")
    assert violation("xend_actors.domain.table", "xend_actors.device.config") is None
    assert violation("xend_actors.xm.create", "xend_actors.mac") is None
