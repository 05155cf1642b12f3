"""Simulated device fleets publishing the three formats over MQTT."""
