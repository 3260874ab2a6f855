"""Skip Graph membership (protocol only): ``node``, ``upkeep``, ``view``, ``packets``."""
