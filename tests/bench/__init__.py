"""The benchmarks' own logic (comparisons, summaries, synthetic runs)."""
