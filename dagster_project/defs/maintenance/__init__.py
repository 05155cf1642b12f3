"""Maintenance: the `compaction` asset, the checks that run with it, its job and schedule, and run pruning."""
