"""What PostgreSQL would refuse, caught while decoding so it becomes a rejection instead of a failed batch.

`text` columns refuse NUL and can only hold valid UTF-8, so a lone UTF-16 surrogate (which `json.loads`
produces from `"\\ud800"`) cannot be sent at all; `jsonb` also refuses `\\u0000` inside strings and the
constants NaN/Infinity (which `json.loads` accepts); `double precision` holds magnitudes up to about
1.8e308, beyond which Python's float becomes inf. Sizes are bounded by configured limits so one device
cannot fill a table with megabytes of text. Every decoder runs its stored text and its JSON through here.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass

from iot_core.formats.errors import DecodeError

# jsonb's parser recurses per nesting level; so does Python's json module (RecursionError near 1000).
MAX_JSON_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")
_FLOAT8_MAX = int(sys.float_info.max)
_MAX_INT_DIGITS = len(str(_FLOAT8_MAX))


@dataclass(frozen=True, slots=True)
class Limits:
    """Configured size limits (from `DecodeOptions`)."""

    max_payload_bytes: int = 256 * 1024
    max_field_chars: int = 256
    max_meta_bytes: int = 16 * 1024


DEFAULT_LIMITS = Limits()


def check_payload_size(payload: bytes, limits: Limits) -> None:
    if len(payload) > limits.max_payload_bytes:
        raise DecodeError(
            "payload_too_large", f"payload of {len(payload)} bytes (max {limits.max_payload_bytes})"
        )


def check_chars(text: str, what: str, stage: str = "decode") -> str:
    """`text` unchanged if PostgreSQL can store it: no NUL, no unpaired surrogate."""
    if "\x00" in text:
        raise DecodeError("nul_character", f"{what} contains a NUL character", stage)
    if not text.isascii() and _SURROGATE.search(text):
        raise DecodeError("unpaired_surrogate", f"{what} contains an unpaired UTF-16 surrogate", stage)
    return text


def check_field(text: str, what: str, limits: Limits, stage: str = "decode") -> str:
    """`check_chars` plus the configured field size."""
    check_chars(text, what, stage)
    if len(text) > limits.max_field_chars:
        raise DecodeError(
            "field_too_large", f"{what} of {len(text)} characters (max {limits.max_field_chars})", stage
        )
    return text


def check_number(value: float, what: str) -> float:
    """`value` as a finite float: NaN is not finite, an overflowing number (inf) is out of range."""
    try:
        number = float(value)
    except OverflowError as exc:  # an int beyond double precision
        raise DecodeError("number_out_of_range", f"{what} is beyond the range of double precision") from exc
    if math.isnan(number):
        raise DecodeError("not_finite", f"{what} is NaN")
    if math.isinf(number):
        raise DecodeError("number_out_of_range", f"{what} is beyond the range of double precision")
    return number


@dataclass(frozen=True, slots=True)
class InvalidNumber:
    """Stands in for a JSON number PostgreSQL refuses, so that only the element holding it fails."""

    reason: str
    detail: str

    def error(self) -> DecodeError:
        return DecodeError(self.reason, self.detail)


def _constant(name: str) -> InvalidNumber:
    return InvalidNumber("not_finite", f"JSON holds {name}, which is not a number PostgreSQL accepts")


def _parse_int(text: str) -> int | InvalidNumber:
    # Counting digits first avoids int()'s own limit (ValueError past 4300 digits) and its cost.
    if len(text.lstrip("-")) > _MAX_INT_DIGITS or abs(number := int(text)) > _FLOAT8_MAX:
        return InvalidNumber(
            "number_out_of_range", f"JSON integer of {len(text)} digits is beyond double precision"
        )
    return number


def _parse_float(text: str) -> float | InvalidNumber:
    number = float(text)
    if math.isinf(number):
        return InvalidNumber("number_out_of_range", f"JSON number {text[:40]} is beyond double precision")
    return number


def parse_json(text: str, what: str) -> object:
    """Parse `text`; numbers PostgreSQL refuses become `InvalidNumber`, strings are not checked yet.

    For payloads whose elements fail one by one (event arrays): `check_json` each part that is stored.
    """
    if "\x00" in text:
        raise DecodeError("nul_character", f"{what} contains a NUL character")
    try:
        return json.loads(text, parse_constant=_constant, parse_int=_parse_int, parse_float=_parse_float)
    except json.JSONDecodeError as exc:
        raise DecodeError("bad_json", f"{what} is not JSON: {exc.msg} at {exc.pos}") from exc
    except RecursionError as exc:
        raise DecodeError("json_too_deep", f"{what} nests deeper than {MAX_JSON_DEPTH} levels") from exc


def load_json(text: str, what: str) -> object:
    """Parse `text` as JSON that `jsonb` and `double precision` accept, or raise a specific DecodeError."""
    doc = parse_json(text, what)
    check_json(doc, what)
    return doc


def check_json(doc: object, what: str) -> None:
    """Every key and string of `doc` passes `check_chars`, every number is storable, and it nests at
    most MAX_JSON_DEPTH levels."""
    pending: list[tuple[object, int]] = [(doc, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, str):
            check_chars(node, f"a string in {what}")
        elif isinstance(node, InvalidNumber):
            raise node.error()
        elif isinstance(node, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise DecodeError("json_too_deep", f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(node, dict):
                for key, value in node.items():
                    check_chars(key, f"a key in {what}")
                    pending.append((value, depth + 1))
            else:
                pending.extend((value, depth + 1) for value in node)


def dump_json(doc: object, what: str, max_bytes: int) -> str:
    """Compact, key-sorted JSON of a document `load_json` produced, bounded by `max_bytes`."""
    try:
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:  # NaN or inf in a document that did not come from load_json
        raise DecodeError("not_finite", f"{what} holds a number that is not finite") from exc
    if len(text) > max_bytes:  # ensure_ascii output: characters are bytes
        raise DecodeError("field_too_large", f"{what} of {len(text)} bytes as JSON (max {max_bytes})")
    return text


def printable(text: str, max_chars: int = 1000) -> str:
    """`text` made storable for diagnostics (reject topic and detail): NUL and surrogates escaped."""
    text = text[:max_chars].replace("\x00", "\\x00")
    if not text.isascii() and _SURROGATE.search(text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
