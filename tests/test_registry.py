"""The generic plugin registry: lookups, the default, and what is built from its contents."""

import pytest

from meshlearn.errors import RegistryError
from meshlearn.registry import Registry, per_contents


def test_a_builder_runs_once_per_set_of_names_and_again_after_a_registration():
    reg: Registry[int] = Registry("test_things")
    reg.register("a", 1)
    calls = []

    @per_contents(lambda: reg)
    def names_seen() -> tuple[str, ...]:
        calls.append(1)
        return tuple(reg.names())

    assert names_seen() == ("a",) and names_seen() == ("a",) and len(calls) == 1
    reg.register("b", 2)
    assert names_seen() == ("a", "b") and len(calls) == 2


def test_unknown_and_duplicate_names_raise_naming_the_valid_ones():
    reg: Registry[int] = Registry("test_things")
    reg.register("a", 1)
    with pytest.raises(RegistryError, match="unknown test_things 'z' \\(valid: a\\)"):
        reg.get("z")
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a", 2)
