"""The one exception type that means "the user's input or files are wrong"."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or files: the app layer reports it as one line, exit status 2."""
