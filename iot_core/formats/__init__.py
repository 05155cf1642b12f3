"""Pure decoders of the three device formats: no I/O, shared by the assets, tests and benchmarks."""
