"""No algorithm name appears outside its own module: build, run, deploy and the CLI only look specs up.

An algorithm's names are its registry name and its config section. "Appears" means what code can act
on: a string constant equal to the name, or an attribute / variable of that name (``cfg.tram``).
Prose in docstrings may mention algorithms; code may not branch on them.
"""

import ast
import inspect
from pathlib import Path

import meshlearn
from meshlearn.fl.spec import ALGORITHMS

SRC = Path(meshlearn.__file__).parent
# names that other registries use for plugins of their own, with where and why
OTHER_USES = {"dsml": {"overlay/dsml/sim.py": "the overlay study of the skip mesh itself (an overlay protocol)",
                       "overlay/dsml/__init__.py": "the overlay study's package"}}


def _names_in(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.Name):
            found.add(node.id)
    return found


def _mentions() -> dict[str, set[str]]:
    """Every name a source file uses, by path relative to the package."""
    return {str(p.relative_to(SRC)): _names_in(ast.parse(p.read_text(encoding="utf-8")))
            for p in SRC.rglob("*.py")}


def test_each_algorithm_name_appears_only_in_its_own_module():
    used = _mentions()
    for name, spec in ALGORITHMS.items():
        own = str(Path(inspect.getsourcefile(spec.build)).relative_to(SRC))
        for word in {name, spec.section} - {None}:
            elsewhere = {path for path, names in used.items() if word in names and path != own}
            elsewhere -= set(OTHER_USES.get(word, {}))
            assert not elsewhere, f"{word!r} ({name}) appears outside {own}: {sorted(elsewhere)}"


def test_the_check_would_catch_a_stray_name():
    assert "tram" in _names_in(ast.parse("if cfg.fl.algorithm == 'tram': pass"))
    assert "dsfl" in _names_in(ast.parse("x = cfg.dsfl.temperature"))
    assert "tram" not in _names_in(ast.parse('"""Tram-FL routes a tram of models."""'))
