"""Chord ring and failure propagation. Protocol: ``node``, ``propagation``, ``packets``; driver: ``sim``."""
