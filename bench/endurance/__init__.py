"""The soak benchmark's parts (`python -m bench.soak`): the stack under test, what is sampled every 30 s,
and the summary computed from the samples."""
