"""The listener's session at the broker: its subscriptions and CONNECT properties, and `prime_session`,
which makes the session before the listener runs.

A broker answers a QoS 1 publish that no subscription matches with PUBACK reason code 0x10 ("no matching
subscribers", a success code) and drops the message. On a broker that has never seen the listener's client
id (a new broker, a new state folder, a new client id), every message published before the listener's
first SUBSCRIBE is dropped that way while its publisher counts it as acknowledged: `iot-etl up` starting its
simulator beside the listener lost the simulator's first 6-14 messages of each fresh start so,
and devices publishing to `up`'s new broker while `up` starts lost everything until the listener ran.
`prime_session` connects as the listener (its client id, certificate and session expiry), subscribes as it
does and leaves; from then on the broker keeps every matching message in the session for the listener.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from iot_core.mqtt.client import describe_connect_error, new_client
from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.settings import Settings

#: How long `prime_session` waits for the broker's CONNACK and SUBACK, and for its own DISCONNECT to leave.
PRIME_TIMEOUT_S = 10.0


class SessionError(Exception):
    """The broker did not take the listener's session (the message says why, in one line)."""


def subscriptions(settings: Settings) -> list[tuple[str, SubscribeOptions]]:
    """The listener's topic filters at its QoS; "retain handling 1": retained messages are sent for a new
    subscription only, not again when an existing one is repeated."""
    options = SubscribeOptions(
        qos=settings.listener_qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
    )
    return [(topic, options) for topic in settings.listener_filters]


def session_properties(settings: Settings, receive_maximum: int) -> Properties:
    """CONNECT properties of the listener's persistent session: the broker keeps it (and queues for it)
    for IOT_LISTENER_SESSION_EXPIRY_S after a disconnect; at most `receive_maximum` QoS 1/2 messages are in
    flight to the connection."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = settings.listener_session_expiry_s
    properties.ReceiveMaximum = receive_maximum
    return properties


def prime_session(settings: Settings, timeout_s: float = PRIME_TIMEOUT_S) -> bool:
    """Make the listener's session at the broker, with its subscriptions, unless the broker has it.

    True when this call made it, False when the broker had it already (it is left as it is). Raises
    SessionError when the broker cannot be reached or refuses. Call it only while no listener of this
    client id is connected: the broker would end that listener's connection (its session stays).
    Messages the broker sends meanwhile (retained ones, a queue) are not acknowledged here: they stay in the
    session for the listener (one at a time: receive maximum 1)."""
    endpoint = MqttEndpoint.for_role(settings, "listener")
    client = new_client(endpoint, settings.listener_session_id, manual_ack=True)
    answered, gone = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(
        client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            outcome["error"] = f"the broker refused the connection: {reason}"
        elif flags.session_present or not settings.listener_filters:
            outcome["made"] = False
        else:
            rc, _mid = client.subscribe(subscriptions(settings))
            if rc == mqtt.MQTT_ERR_SUCCESS:
                return  # on_subscribe answers
            outcome["error"] = f"the subscriptions did not go out: {mqtt.error_string(rc)}"
        answered.set()

    def on_subscribe(
        _client: mqtt.Client, _userdata: Any, _mid: int, reasons: list[ReasonCode], _props: Any
    ) -> None:
        topics = settings.listener_filters
        refused = [f"{t}: {rc}" for t, rc in zip(topics, reasons, strict=False) if rc.is_failure]
        if refused:
            outcome["error"] = f"the broker refused subscriptions ({', '.join(refused)})"
        else:
            outcome["made"] = True
        answered.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_disconnect = lambda *_args: gone.set()
    try:
        client.connect(
            endpoint.host,
            endpoint.port,
            keepalive=endpoint.keepalive_s,
            clean_start=False,
            properties=session_properties(settings, receive_maximum=1),
        )
    except (OSError, ssl.SSLError) as exc:
        raise SessionError(
            f"cannot reach the broker at {endpoint.host}:{endpoint.port}: {describe_connect_error(exc)}"
        ) from None
    client.loop_start()
    try:
        if not answered.wait(timeout_s):
            raise SessionError(
                f"no answer from the broker at {endpoint.host}:{endpoint.port} in {timeout_s:.0f} s"
            )
        if "error" in outcome:
            raise SessionError(outcome["error"])
        return bool(outcome["made"])
    finally:
        if client.disconnect() == mqtt.MQTT_ERR_SUCCESS:  # the session stays: its expiry is not 0
            gone.wait(timeout_s)
        client.loop_stop()
