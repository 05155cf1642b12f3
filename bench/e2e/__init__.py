"""End-to-end comparison of the product with naive MQTT -> PostgreSQL writers (`python -m bench.compare`).

Every system gets the same QoS 1 plain-metric messages from the same kind of private broker and writes
into its own scratch database on the local PostgreSQL; systems run one after another, interleaved
across repetitions, so that they never compete for the CPU.
"""
