"""The base of every error that means "this input can't be used", as opposed to a bug in speechtl.

``speechtl`` (the command) prints a :class:`SpeechtlError` as a one-line message and exits with 2;
any other exception is an internal error: it prints a one-line summary, writes the traceback to a
file and exits with 1. So raise a :class:`SpeechtlError` subclass (or one of the rooms' own types)
for anything a user can fix, with a message that names the file, the line and the fix, and let
everything else propagate.

The rooms' own types derive from it: ``ManifestError`` (``data.manifest``), ``AudioError``
(``features.audio``), ``ModelLoadError`` (``models.base``), ``CT2FormatError`` (``models.ct2``),
``HypothesisError`` (``evaluate.external``), ``AdapterError`` (``adapt.adapters``), ``ConfigError``
(``adapt.config``) and ``TrainDirError`` (``adapt.rundir``). This module, shared by every room like
``speechtl.io``, imports nothing.
"""

from __future__ import annotations


class SpeechtlError(ValueError):
    """Input speechtl can't use; the message says what is wrong, where, and how to fix it.

    A ``ValueError``, so code that caught the rooms' errors as ``ValueError`` still does.
    """


class UsageError(SpeechtlError):
    """An option or argument (on the command line, or of a call) that can't be used; the message names it."""


class MissingPackageError(SpeechtlError, ImportError):
    """An optional package a feature needs is not installed; the message says what to pip-install. An
    ``ImportError`` too, for code that tries a feature and falls back when its package is absent."""


class ResultsError(SpeechtlError):
    """Evaluation or experiment dirs that can't be read or compared (missing, damaged, or mismatched);
    the message names the dir and what to re-run."""
