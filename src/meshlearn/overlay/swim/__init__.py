"""SWIM + Lifeguard. Protocol: ``node``, ``packets``, ``config``, ``state``; drivers: ``sim``, ``udp``."""
