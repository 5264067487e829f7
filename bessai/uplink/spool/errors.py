"""The spool's errors: what a caller can catch, with a message that says what to check."""

from __future__ import annotations


class SpoolError(Exception):
    """The spool could not do what was asked; the message says what to check."""


class SpoolWriteError(SpoolError):
    """A group could not be committed (disk full, I/O error): its records were NOT accepted."""
