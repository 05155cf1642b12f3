"""The simulator: its messages, its publishing, per-device certificates."""
