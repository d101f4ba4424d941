"""The one exception every command turns into one line on stderr: imported by the option table, the argument
helpers and the mount checks alike, so it depends on none of them."""

from __future__ import annotations


class UsageError(Exception):
    """A user mistake: printed as one line, exit status 2 (usage) or 1 (environment)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
