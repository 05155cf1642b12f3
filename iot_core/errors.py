"""Errors a user can act on: each says what happened and what to do, in one line.

Any layer raises them; the command line prints them as they are (a traceback only with `--debug`).
"""

from __future__ import annotations


class UserFacingError(Exception):
    """What happened and what to do about it; `str()` is the one line shown to the user."""

    def __init__(self, what: str, todo: str) -> None:
        super().__init__(what, todo)
        self.what = what
        self.todo = todo

    def __str__(self) -> str:
        return f"{self.what}; {self.todo}"


class PortInUseError(UserFacingError):
    """A server could not bind its address because something else listens there."""

    def __init__(self, host: str, port: int, setting: str) -> None:
        super().__init__(
            f"port {port} on {host} is in use",
            f"stop what listens there or choose another port with {setting}",
        )
        self.host = host
        self.port = port
