"""dnsd: the mirror table, configuration, geo lookup, plan, picker and the DNS protocols."""
