"""dnsd: the mirror table, configuration, geo lookup, plan, picker and the DNS protocols."""


def makeService(cfg, pool, reactor, **kw):
    """The DNS service tree (dnsd.service.DNSService) with `.plan` (`.current` = the live
    ResolutionPlan), `.geo` (GeoLocator) and `.answerer`. Imported lazily so that pure modules
    (`dnsd.picker`, `dnsd.plan`, ...) stay cheap to import."""
    from dnsd.service import makeService as _make

    return _make(cfg, pool, reactor, **kw)


def makeGeo(cfg):
    """The client locator from `[geoip]`, for a node that runs no DNS service (a probe vantage)."""
    from dnsd.service import geo_from_config

    return geo_from_config(cfg)
