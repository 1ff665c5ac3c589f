"""Rows of the mirror table as named records, one module per table, in the manner of Buildbot's
`db/` components.

Each module holds the frozen dataclass of its table's row, the function that makes one from a
SQLAlchemy row, and the reads (and simple writes) every part shares, as `fn(conn, ...)` to be run
inside a `thd(conn)` on the table's pool. Callers get records, never dicts with positional or key
knowledge of the table; the decisions made about a record (serving, fresh, who gets mail, is a
field valid) live in dnsd.serving, dnsd.recipients and dnsd.validation, not here.

    mirrors       Mirror: one download mirror (pinned addresses, URLs, status, specs)
    health        Health: what the probes know now (counters, freshness, resolved addresses)
    maintainers   Maintainer: a (name, address) pair of a mirror
    applications  Application: an offer on the waiting list, with its maintainers
    users         User: an admin-web login
    notes, audit  the append-only logs
"""
