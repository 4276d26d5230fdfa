"""The package layout's rule, read from the source with ``ast``: imports only go down.

errors <- runtime <- wire <- trust <- the roles (hq, bureau, tracker) <- reports <- cli and the
public ``notice_bus/__init__.py``. HQ, the bureau and the tracker never import one another: what two
roles share lives in ``wire`` or ``runtime``, so a bureau's adapter ships without HQ's code
and the tracker without the adapter's. ``reports`` read the tracker's store.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "notice_bus"
ROLES = ("hq", "bureau", "tracker")
#: What each layer may import from notice_bus, besides itself.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "runtime": {"errors"},
    "wire": {"errors", "runtime"},
    "trust": {"errors", "runtime", "wire"},
    **{role: {"errors", "runtime", "wire", "trust"} for role in ROLES},
    "reports": {"errors", "runtime", "wire", "trust", "tracker"},
}


def layer(module: str) -> str:
    """``notice_bus.bureau.sinks.sql`` -> ``bureau``; the package's own ``__init__`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path) -> list[tuple[int, str]]:
    """Every notice_bus module ``path`` imports, at any depth (a function's lazy import too),
    with its line. ``from notice_bus import x`` counts as importing ``notice_bus.x``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("notice_bus")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "notice_bus":
                found += [(node.lineno, f"notice_bus.{a.name}") for a in node.names]
            elif node.module.startswith("notice_bus."):
                found.append((node.lineno, node.module))
    return found


def module_of(path: Path, src: Path) -> str:
    rel = path.relative_to(src.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def violations(src: Path = SRC) -> list[str]:
    bad = []
    for path in sorted(src.rglob("*.py")):
        mod = module_of(path, src)
        own = layer(mod)
        if own not in ALLOWED:  # cli and the public __init__ sit on top: anything goes
            continue
        for line, target in imports(path):
            other = layer(target)
            if other != own and other not in ALLOWED[own]:
                bad.append(f"{path.relative_to(src.parent)}:{line}: {own} imports {target}")
    return bad


def test_imports_only_go_down() -> None:
    assert violations() == []


def test_every_module_is_in_a_known_place() -> None:
    top = {p.stem for p in SRC.glob("*.py")} | {p.name for p in SRC.iterdir() if p.is_dir()}
    known = {"__init__", "errors", "cli", "reports", *ALLOWED}
    assert top - {"__pycache__"} <= known, "a new top-level module or package: give it a layer"


@pytest.mark.parametrize(
    ("module", "line", "layer_"),
    [
        ("tracker/ingest.py", "from notice_bus.bureau.adapter import Adapter", "tracker"),
        ("hq/publisher.py", "from notice_bus import tracker", "hq"),
        ("runtime/db.py", "import notice_bus.wire.model", "runtime"),
        ("wire/model.py", "from notice_bus.hq.tables import HQ_TABLES", "wire"),
    ],
)
def test_the_rule_catches_an_upward_import(
    tmp_path: Path, module: str, line: str, layer_: str
) -> None:
    """The check itself fails on a scratch copy with one forbidden import added."""
    copy = tmp_path / "notice_bus"
    for path in SRC.rglob("*.py"):
        target = copy / path.relative_to(SRC)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    victim = copy / module
    victim.write_text(victim.read_text() + f"\n{line}\n")
    found = violations(copy)
    assert len(found) == 1 and f": {layer_} imports notice_bus." in found[0]
