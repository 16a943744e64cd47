"""Benchmarks and the production soak: scripts run as ``python benchmarks/<name>.py``."""
