"""meshlearn.swarm: a model partitioned across servers (issue 13): blocks, placement, routing, recovery.

Rule: only ``meshlearn.swarm.blocks`` imports torch; every other module here works on block indices
and numpy arrays (checked by import-linter, see pyproject.toml). Importing this package imports nothing.
"""
