"""One exception type for every user-facing problem.

The CLI prints ``error: <problem> — <fix>`` as one line and exits non-zero; a traceback is shown only with
``--debug``. Raise it wherever bad input is detected, with a fix the user can act on.
"""


class BenchmarkError(Exception):
    """A problem the user can fix: bad input, missing data, a checkpoint that does not fit."""

    exit_code = 2

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)


class CheckpointError(BenchmarkError):
    """An unreadable, foreign or incompatible checkpoint."""


class DataError(BenchmarkError):
    """A dataset root that is missing or does not have the expected layout."""


class TaskFailed(BenchmarkError):
    """A task ran but could not produce a result (NaN loss, crash inside the runner)."""
