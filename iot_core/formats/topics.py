"""What a topic says: which format, which device, which metric or connector."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from iot_core.formats.errors import DecodeError
from iot_core.formats.guards import DEFAULT_LIMITS, Limits, check_chars, check_field

_F2_DEVICE = re.compile(r"^f2-([0-9a-fA-F]{12})$")


@dataclass(frozen=True, slots=True)
class Topic:
    kind: str  # 'plain' | 'event' | 'f2_sensor' | 'f2_doors'
    device_key: str
    metric: str = ""  # plain: the metric segment
    mac: str = ""  # f2: lowercase 12 hex digits
    mode: str = ""
    port: str = ""
    component: str = ""


#: The topic segment that names the device, by the topic's first segment.
DEVICE_SEGMENT = {"devices": 1, "stat": 1, "tele": 1, "qs": 2}


#: Marks a topic that a `text` column cannot hold (a NUL, bytes that are not UTF-8), archived as base64 of
#: its bytes. `#` cannot occur in an MQTT topic name, so no published topic starts with the mark.
ESCAPED_TOPIC_MARK = "#base64:"


def escape_topic(topic: bytes) -> str:
    """The topic as storable text: itself when it is, else the mark and the base64 of its bytes."""
    try:
        text = topic.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text and not text.startswith(ESCAPED_TOPIC_MARK):
        return text
    return ESCAPED_TOPIC_MARK + base64.b64encode(topic).decode()


def unescape_topic(text: str) -> bytes:
    """The original bytes of a topic as `escape_topic` stored it."""
    if not text.startswith(ESCAPED_TOPIC_MARK):
        return text.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(text[len(ESCAPED_TOPIC_MARK) :], validate=True)
    except binascii.Error:
        return text.encode()


def _check_escaped(topic: str) -> None:
    """An escaped topic is always rejected, with what made it unstorable."""
    original = unescape_topic(topic)
    try:
        text = original.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("not_utf8", f"topic is not UTF-8 text (byte {exc.start})", stage="topic") from exc
    check_chars(text, "topic", stage="topic")
    raise DecodeError(
        "unknown_topic", f"topic {topic[:200]!r} matches none of the known formats", stage="topic"
    )


def topic_device(topic: str) -> str:
    """The device segment of a topic of a known format ('' when there is none). Used for sharding and
    for addressing feedback even when the rest of the topic is malformed."""
    parts = topic.split("/")
    index = DEVICE_SEGMENT.get(parts[0])
    if index is None or len(parts) <= index:
        return ""
    return parts[index]


def parse_topic(topic: str, limits: Limits = DEFAULT_LIMITS) -> Topic:
    """Which format the topic names; the device key and metric it yields are storable text."""
    if not topic:
        raise DecodeError(
            "malformed_entry",
            "the stream entry had no topic or payload; its fields are in the payload",
            stage="topic",
        )
    if topic.startswith(ESCAPED_TOPIC_MARK):
        _check_escaped(topic)
    check_chars(topic, "topic", stage="topic")
    parts = topic.split("/")
    head = parts[0] if parts else ""
    if head == "devices":
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise DecodeError(
                "unknown_topic",
                f"plain topics are devices/<device_id>/<metric>, got {topic[:200]!r}",
                stage="topic",
            )
        return Topic(
            "plain",
            check_field(parts[1], "device id", limits, stage="topic"),
            metric=check_field(parts[2], "metric", limits, stage="topic"),
        )
    if head == "qs" and len(parts) == 4 and parts[1] == "v1" and parts[3] == "events" and parts[2]:
        return Topic("event", check_field(parts[2], "device id", limits, stage="topic"))
    if head in ("stat", "tele") and len(parts) >= 3:
        match = _F2_DEVICE.match(parts[1])
        if match:
            mac = match.group(1).lower()
            device_key = f"f2-{mac}"
            if len(parts) == 5 and all(parts[2:]):
                return Topic(
                    "f2_sensor", device_key, mac=mac, mode=parts[2], port=parts[3], component=parts[4]
                )
            if len(parts) == 3 and parts[2] == "door-sensors":
                return Topic("f2_doors", device_key, mac=mac)
    raise DecodeError(
        "unknown_topic", f"topic {topic[:200]!r} matches none of the known formats", stage="topic"
    )
