"""MQTT for every part: one client builder (MQTT v5, TLS, credentials: `client`), the endpoint each
service role connects to (`endpoint`), the TLS side of a client that takes up a rotated certificate
(`tls`), and one publisher that counts the broker's acknowledgements (`publisher`)."""
