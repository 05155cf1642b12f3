"""Examples quoted from the reference documents (../shared/reference)."""

# The example event exactly as the event format's documentation gives it.
REFERENCE_004_EVENT = """{
  "schema": 1,
  "event_id": "esp32-01-1707523200000",
  "device_id": "esp32-01",
  "event_type": "temperature",
  "value": 23.5,
  "unit": "C",
  "ts_device": "2024-02-10T00:00:00Z",
  "meta": {
    "sensor": "dht22",
    "location": "living_room"
  }
}"""
