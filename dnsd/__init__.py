"""dnsd: the mirror table, configuration, geo lookup, plan, picker and the DNS protocols."""


def makeService(cfg, pool, reactor, **kw):
    """The DNS service tree (dnsd.service.DNSService) with `.plan` (`.current` = the live
    ResolutionPlan), `.geo` (GeoLocator) and `.answerer`. Imported lazily so that pure modules
    (`dnsd.picker`, `dnsd.plan`, ...) stay cheap to import."""
    from dnsd.service import makeService as _make

    return _make(cfg, pool, reactor, **kw)
