"""Which strings may name a device (and a service certificate).

A device id becomes a certificate's CN, the broker username (`use_identity_as_username`), a topic level
in ACL patterns (`devices/%u/+`) and a file name (`devices/ID.pem`). So it must be one safe topic level
and one safe file name: no `/ + # %` (topic separators, wildcards, ACL substitutions), no whitespace or
line break (configuration files), no upper case (one spelling per device), and not the `iot-etl-`
prefix, which names the project's own services (`iot-etl-listener`, ...).
"""

from __future__ import annotations

import re

DEVICE_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# F2 Smart Controllers name themselves after their MAC address; such an id also matches DEVICE_ID_PATTERN.
F2_ID_PATTERN = re.compile(r"^f2-[0-9a-f]{12}$")
RESERVED_PREFIX = "iot-etl-"

_RULE = "use 1-63 chars of a-z 0-9 . _ -, starting with a letter or digit (e.g. sensor-01, f2-aabbccddee01)"


def _refusal(value: str) -> str | None:
    """Why `value` cannot be a name, or None when it can."""
    if not value:
        return "is empty"
    if any(c in value for c in "/+#%"):
        return "contains / + # or %, which are MQTT topic separators, wildcards or ACL substitutions"
    if any(c.isspace() for c in value):
        return "contains whitespace or a line break"
    if value != value.lower():
        return "contains upper case"
    if len(value) > 63:
        return f"is {len(value)} characters long (at most 63)"
    if value.startswith(RESERVED_PREFIX):
        return f"starts with {RESERVED_PREFIX!r}, which is reserved for the project's services"
    if not DEVICE_ID_PATTERN.fullmatch(value):
        return "contains a character other than a-z 0-9 . _ - or does not start with a letter or digit"
    return None


def validate_name(value: str, what: str = "device id") -> str:
    """`value` when it may name a `what`; otherwise ValueError with one line naming the value and the rule."""
    reason = _refusal(value)
    if reason is not None:
        raise ValueError(f"{what} {value!r} {reason}; {_RULE}")
    return value


def validate_device_id(value: str) -> str:
    """`value` when it is a valid device id; otherwise ValueError naming the value (repr) and the rule."""
    return validate_name(value, "device id")


def is_f2_id(value: str) -> bool:
    """Whether `value` is an F2 controller id (`f2-` and 12 lowercase hex digits)."""
    return F2_ID_PATTERN.fullmatch(value) is not None
