"""Experiments: the typed config of one run and the code that wires it into a runtime."""
