"""The ``fl`` experiment kind: config model (``schema``), building runs (``build``), the kind (``kind``),
real processes (``deploy``)."""
