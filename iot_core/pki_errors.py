"""The one error type of the PKI modules (`iot_core.pki_*`), so that a command catches one type for all.

Its message is one line a user can act on; key material is never put into one.
"""

from __future__ import annotations


class PkiError(ValueError):
    """A PKI operation refused with one line a user can act on (the bad value and what to do)."""
