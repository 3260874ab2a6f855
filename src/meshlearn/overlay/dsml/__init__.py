"""Distributed Skip Mesh List aggregation. Protocol: ``node``; driver: ``sim``."""
