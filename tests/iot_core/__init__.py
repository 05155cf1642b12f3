"""The contracts: decoders and their guards, row shapes, device ids, MQTT clients over TLS."""
