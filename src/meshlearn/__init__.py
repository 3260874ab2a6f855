"""meshlearn: learning and inference across machines on unreliable networks."""

__version__ = "0.1.0"
