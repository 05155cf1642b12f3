"""The test suite; its folders mirror the packages (plus `system` for whole processes and `project` for
the repository's files)."""
