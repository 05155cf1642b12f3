"""An F2 controller's th-sensor reading as it arrives over MQTT: its topic and its JSON payload."""

from __future__ import annotations

import json

from iot_core.formats.f2 import encode_reply, to_hex

F2_TOPIC = "tele/f2-aabbccddee01/sensor-mode/J1/sensor-1"


def f2_payload(timestamp: str) -> str:
    """A th-sensor reply: temperature 0x0929 = 23.45 °C (2 decimals), humidity 0x022B = 55.5 %RH."""
    return json.dumps({"timestamp": timestamp, "data": to_hex(encode_reply(1, bytes.fromhex("0929022B")))})
