"""One exception base: every failure class of the package carries its exit code, and the CLI
exits with exactly that code, printing the message (which names the fix) and no traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import bids_harmonize
from bids_harmonize.cli import run
from bids_harmonize.errors import ExitCode, HarmonizeError
from helpers import Scan, make_bids


def _package_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a module of bids_harmonize (``__main__`` modules, which
    run on import, left out)."""
    found = {}
    for module in pkgutil.walk_packages(bids_harmonize.__path__, "bids_harmonize."):
        if module.name.endswith("__main__"):
            continue
        for _, value in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.name:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[name] for name in sorted(found)]


EXCEPTIONS = _package_exceptions()


def test_the_walk_finds_the_known_failures():
    names = {cls.__name__ for cls in EXCEPTIONS}
    assert {"BundleError", "WorkflowFailed", "CLIError", "DatasetError", "UnknownSiteError"} <= names
    assert len(EXCEPTIONS) >= 19


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda cls: cls.__name__)
def test_every_exception_class_derives_from_the_base_and_carries_a_code(cls):
    assert issubclass(cls, HarmonizeError)
    assert isinstance(cls.exit_code, ExitCode) and cls.exit_code != ExitCode.OK


def test_callers_that_catch_builtins_still_catch_them():
    from bids_harmonize.bids.selection import FilterFileError
    from bids_harmonize.levels.run import WorkflowFailed
    from bids_harmonize.model.bundle import UnknownSiteError

    assert issubclass(FilterFileError, ValueError) and issubclass(UnknownSiteError, LookupError)
    assert issubclass(WorkflowFailed, RuntimeError)


def _instance(cls: type[HarmonizeError]) -> HarmonizeError:
    """An instance with the message 'the fix is X', whatever the class's constructor takes."""
    error = cls.__new__(cls)
    Exception.__init__(error, "the fix is X")
    return error


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda cls: cls.__name__)
def test_the_cli_exits_with_the_code_the_class_carries(cls, tmp_path, monkeypatch, capsys):
    bids = make_bids(tmp_path / "bids", [Scan("01", "siemens_a")], shape=(8, 8, 8))

    def fail(config):
        raise _instance(cls)

    monkeypatch.setattr(run, "run_level", fail)
    out = tmp_path / "out"
    assert run.main([str(bids), str(out), "participant", "--skip-bids-validation"]) == cls.exit_code
    err = capsys.readouterr().err
    assert "error: the fix is X" in err and "Traceback" not in err
    assert not list((out / "logs").glob("crash-*"))  # a named failure needs no crash report


def test_an_unnamed_failure_is_exit_1_with_a_crash_report(tmp_path, monkeypatch, capsys):
    bids = make_bids(tmp_path / "bids", [Scan("01", "siemens_a")], shape=(8, 8, 8))
    monkeypatch.setattr(run, "run_level", lambda config: 1 / 0)
    out = tmp_path / "out"
    assert run.main([str(bids), str(out), "participant", "--skip-bids-validation"]) == ExitCode.FAILURE
    assert "ZeroDivisionError" in capsys.readouterr().err
    assert list((out / "logs").glob("crash-*"))
