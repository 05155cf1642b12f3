"""Quality: the checks per hour partition and the freshness check with its job and schedule."""
