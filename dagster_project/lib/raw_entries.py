"""Stream entries -> `raw_messages` rows (pure). A malformed entry is kept, never dropped or fatal."""

from __future__ import annotations

import base64
import json

from iot_core.formats.topics import escape_topic
from iot_core.streams import EntryId, utc_from_ms

MALFORMED_TOPIC = ""  # the decoder rejects it with reason `malformed_entry`


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode()


def _int(value: bytes | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def raw_row(stream: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> tuple:
    """A row in `storage.RAW_COLUMNS` order. An entry without topic or payload (not written by our
    listener) is archived with an empty topic and all its fields as JSON in the payload."""
    eid = EntryId.parse(entry_id)
    topic, payload = fields.get(b"topic"), fields.get(b"payload")
    if topic is None or payload is None:
        topic_text = MALFORMED_TOPIC
        payload = json.dumps({_text(k): _text(v) for k, v in fields.items()}, sort_keys=True).encode()
    else:
        # a topic `raw_messages.topic` (text) cannot hold is escaped, its bytes recoverable; the decoder
        # rejects it with what made it unstorable
        topic_text = escape_topic(topic)
    return (
        utc_from_ms(eid.ms),
        stream,
        eid.ms,
        eid.seq,
        topic_text,
        payload,
        _int(fields.get(b"qos"), 0),
        fields.get(b"retain") == b"1",
        _int(fields.get(b"rx_us"), eid.ms * 1000),
        fields.get(b"dup") == b"1",
    )
