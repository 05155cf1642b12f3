"""Why a message (or one element of it) was not stored."""

from __future__ import annotations


class DecodeError(ValueError):
    """A message that cannot become a fact row; `reason` is a short code, `detail` says what to fix."""

    def __init__(self, reason: str, detail: str, stage: str = "decode") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.stage = stage
