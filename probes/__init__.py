"""probes: checking mirrors, verdicts with hysteresis, probe history."""


def makeService(cfg, pool, reactor, geo=None):
    """The probe loop (and its history upkeep) as one Twisted service.

    `geo` is anything with `.country(ip) -> "DE" | None` (dnsd.geo.GeoLocator, handed in by the tac);
    without it the geo check is skipped."""
    from probes.service import ProbeService

    return ProbeService(cfg, pool, reactor, geo=geo)
