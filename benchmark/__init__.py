"""The core of the MIM transfer benchmark: CLI, registry, runner, store, leaderboards, checkpoints."""

__version__ = "0.1.0"
