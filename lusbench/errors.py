"""Errors a user can cause, and the exit codes the CLI maps them to (docs/cli.md)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_CANNOT_COMPARE = 3
EXIT_INTERNAL = 4  # a bug (in lusbench or a plugin): one line on stderr, the traceback in a file
EXIT_INTERRUPTED = 130


def exception_summary(exc: BaseException) -> str:
    """``Type: first line of the message`` (or just ``Type``): how a plugin's failure is shown in one line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {' '.join(text.splitlines()[0].split())}" if text else type(exc).__name__


class UserError(Exception):
    """A problem with the user's input: printed as one line, no traceback, exit code 2."""

    exit_code = EXIT_USAGE


class CannotCompareError(UserError):
    """`lusbench check` could not compare: baseline missing or made with another configuration."""

    exit_code = EXIT_CANNOT_COMPARE


class PluginError(UserError):
    """A plugin failed to load or registered something invalid (e.g. a taken name)."""


class TrainingDiverged(UserError):
    """Training produced a non-finite loss or non-finite probabilities (a learning rate too high, a broken loss).

    Named by strategy, seed and fold; the run stops, and the folds finished before it are kept.
    """
