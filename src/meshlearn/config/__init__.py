"""meshlearn.config: generic TOML <-> pydantic config machinery.

The experiment schema lives elsewhere; everything here works for any pydantic v2
model tree. ``load_config`` merges a preset dict, a TOML file and ``--set a.b=1``
overrides and validates; errors come back as one ``ConfigError`` listing every
problem with its key, reason and valid choices. ``to_toml`` and
``dump_with_comments`` write configs back out.
"""

from meshlearn.config.dump import diff_from_default, dump_with_comments, to_toml
from meshlearn.config.loader import (
    apply_overrides,
    deep_merge,
    load_config,
    parse_value,
    read_toml,
    validate_config,
)

__all__ = [
    "load_config",
    "validate_config",
    "read_toml",
    "deep_merge",
    "apply_overrides",
    "parse_value",
    "to_toml",
    "dump_with_comments",
    "diff_from_default",
]
