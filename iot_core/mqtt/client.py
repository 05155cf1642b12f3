"""The one builder of MQTT clients (MQTT v5, credentials, TLS) and the words for a failed connection attempt.

Every part of the product (listener, publisher, simulator, status) builds its paho client here, so they all
speak MQTT v5 and take up a rotated client certificate the same way.
"""

from __future__ import annotations

import ssl
import sys

import paho.mqtt.client as mqtt

from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.mqtt.tls import ClientTls


def new_client(
    endpoint: MqttEndpoint, client_id: str, *, manual_ack: bool = False, tls: ClientTls | None = None
) -> mqtt.Client:
    """A configured, not yet connected MQTT v5 client.

    With TLS (`endpoint.tls_ca`, or `tls` given), the client certificate is re-read before every
    connection attempt, so a certificate rotated on disk is used from the next (re)connect on.
    """
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    tls = tls or ClientTls.for_endpoint(endpoint)
    if tls is not None:
        client.tls_set_context(tls.context)
        # paho 2.2 calls on_pre_connect in reconnect(), before it opens the socket: on the first
        # connect and on each automatic reconnect of its loop
        client.on_pre_connect = lambda _client, _userdata: tls.reload_if_changed()
    return client


def describe_connect_error(exc: BaseException | None) -> str:
    """Why a connection attempt failed, in words (the TLS reason when there is one)."""
    if exc is None:
        return "connection failed"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the broker's certificate does not verify: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if "ALERT" in reason:  # the broker's answer to our certificate
            return (
                f"the broker refused this client's certificate ({reason}): is it issued by the CA the broker "
                "trusts for this port, valid and not revoked?"
            )
        return f"TLS failed ({reason}): is this the broker's TLS port?"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def current_connect_error() -> BaseException | None:
    """The exception of a failed connection attempt, inside paho's `on_connect_fail`: paho calls it from
    the `except OSError` block around the attempt, so it is the exception being handled."""
    return sys.exc_info()[1]
