"""Overlay layering: protocol modules never import a driver, the simulator, the runtime, store, config or fl."""

import ast
from pathlib import Path

import meshlearn.overlay

ROOT = Path(meshlearn.overlay.__file__).parent
DRIVERS = {"simnet", "experiment", "swim.sim", "swim.udp", "chord.sim", "dsml.sim"}
ALLOWED = ("meshlearn.node", "meshlearn.wire", "meshlearn.errors", "meshlearn.overlay.")


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__").removesuffix("__init__")


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_protocol_modules_import_no_driver_simulator_runtime_store_config_or_fl():
    protocols = [p for p in sorted(ROOT.rglob("*.py")) if _module(p) not in DRIVERS]
    assert len(protocols) > 10
    bad = []
    for path in protocols:
        for name in _imports(path):
            if not name.startswith("meshlearn"):
                continue
            inner = name.removeprefix("meshlearn.overlay.")
            if not name.startswith(ALLOWED) or inner in DRIVERS:
                bad.append(f"{_module(path)} imports {name}")
    assert bad == []


def test_drivers_exist_and_package_inits_import_nothing():
    assert all((ROOT / (d.replace(".", "/") + ".py")).is_file() for d in DRIVERS)
    for init in ROOT.rglob("__init__.py"):
        assert _imports(init) == [], init
