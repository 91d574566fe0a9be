"""Errors a user can cause, and the exit codes the CLI maps them to (docs/cli.md)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_CANNOT_COMPARE = 3


class UserError(Exception):
    """A problem with the user's input: printed as one line, no traceback, exit code 2."""

    exit_code = EXIT_USAGE


class CannotCompareError(UserError):
    """`lusbench check` could not compare: baseline missing or made with another configuration."""

    exit_code = EXIT_CANNOT_COMPARE


class PluginError(UserError):
    """A plugin failed to load or registered something invalid (e.g. a taken name)."""
