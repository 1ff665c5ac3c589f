"""probes: checking mirrors, verdicts with hysteresis, probe history."""
