"""The listener: stream writes, per-device limits, sessions, shared subscriptions."""
