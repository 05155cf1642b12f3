"""Naive MQTT -> PostgreSQL writers the product is compared with; each runs as its own process:
`python -m bench.e2e.baselines.<copy_writer|insert_writer|executemany_writer> HOST PORT DATABASE_URL`."""
