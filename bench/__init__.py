"""bench: backdoor-defense benchmarks as sweeps."""

__version__ = "0.1.0"
