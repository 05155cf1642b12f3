"""The decoders' version, recorded with every batch and as the assets' code version.

A module of its own, free of polars, so that the code location can name it without importing the
decoders (which only run workers use)."""

DECODER_VERSION = "1"
