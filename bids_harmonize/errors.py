"""The exit codes of the BIDS Apps execution draft, and the one base of every failure we name.

Every exception class of bids_harmonize derives from ``HarmonizeError`` and states its exit
code as a class attribute, so the command line maps any failure to its code by reading it off
the exception (cli/run.py); nothing else keeps a table. A subclass that callers also catch as
a builtin (``ValueError``, ``LookupError``, ``RuntimeError``) keeps that builtin as its
second base. This module imports nothing of the package, so every layer may raise from it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes (BIDS Apps execution draft; README.md lists them for users)."""

    OK = 0
    FAILURE = 1
    INVALID_BIDS = 16
    NOTHING_SELECTED = 18
    USAGE = 64
    INPUT_MISSING = 66


class HarmonizeError(Exception):
    """A failure whose message names the fix; the CLI prints it (no traceback) and exits with
    ``exit_code``."""

    exit_code: ExitCode = ExitCode.FAILURE  # subclasses set theirs; CLIError may set one per instance
