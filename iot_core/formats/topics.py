"""What a topic says: which format, which device, which metric or connector."""

from __future__ import annotations

import re
from dataclasses import dataclass

from iot_core.formats.errors import DecodeError

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


def parse_topic(topic: str) -> Topic:
    if not topic:
        raise DecodeError(
            "malformed_entry",
            "the stream entry had no topic or payload; its fields are in the payload",
            stage="topic",
        )
    parts = topic.split("/")
    head = parts[0] if parts else ""
    if head == "devices":
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise DecodeError(
                "unknown_topic",
                f"plain topics are devices/<device_id>/<metric>, got {topic!r}",
                stage="topic",
            )
        return Topic("plain", parts[1], metric=parts[2])
    if head == "qs" and len(parts) == 4 and parts[1] == "v1" and parts[3] == "events" and parts[2]:
        return Topic("event", parts[2])
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
    raise DecodeError("unknown_topic", f"topic {topic!r} matches none of the known formats", stage="topic")
