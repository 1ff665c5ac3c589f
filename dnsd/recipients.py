"""Who receives which mail: the one table of audiences, and how a recipient is written.

Every mail has a *kind* (the outbox column); `AUDIENCE[kind]` says who gets it. Recipients are
(name, address) pairs from the table or the configuration, never text to be split: SMTP is given
the bare addresses (`envelope`), the To: header the pairs encoded by the email package (`header`),
so a maintainer named "Doe, Jane" is one recipient with a quoted display name, and a name such as
"Jane, attacker@evil.example, Doe" stays a name.

It is also the one home of *contacts*: the addresses listed for a mirror (its maintainers), which
are who may log in to look after it (admin.maintainers: a login link is mailed to a contact, and a
maintainer's session reaches the mirrors that list its address at each request). Addresses are
compared as `address_key` has them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.headerregistry import Address

from dnsd import validation


@dataclass(frozen=True)
class Recipient:
    name: str
    email: str

    def header(self) -> Address:
        """The To: header form; the email package quotes and RFC 2047-encodes the name."""
        user, _, domain = self.email.rpartition("@")
        return Address(display_name=self.name, username=user, domain=domain)


class Audience(enum.Enum):
    LIST = "the list"
    MAINTAINERS = "the maintainers"
    LIST_AND_MAINTAINERS = "the list and the maintainers"
    MAINTAINERS_ELSE_LIST = "the maintainers (the list when there are none)"
    APPLICANT = "the applicant"
    ADDRESS = "the address given"


AUDIENCE = {
    # changes made by people (admin.store): the list, and the maintainers of the mirror
    "mirror-added": Audience.LIST_AND_MAINTAINERS,
    "mirror-disabled": Audience.LIST_AND_MAINTAINERS,
    "mirror-enabled": Audience.LIST_AND_MAINTAINERS,
    "mirror-retired": Audience.LIST_AND_MAINTAINERS,
    "maintenance-planned": Audience.LIST_AND_MAINTAINERS,
    "maintenance-cancelled": Audience.LIST_AND_MAINTAINERS,
    "import": Audience.LIST,
    # the probes' verdicts: the people who can fix it; somebody must hear of it
    "disabled": Audience.MAINTAINERS_ELSE_LIST,
    "recovered": Audience.MAINTAINERS_ELSE_LIST,
    "vantage-broken": Audience.LIST,       # one mail about a probe vantage, not one per mirror
    # downloaders' reports reaching [reports] threshold (admin.mirror_reports)
    "reports": Audience.MAINTAINERS_ELSE_LIST,
    # scheduled mails (admin.reports)
    "weekly": Audience.LIST,
    "reminder": Audience.MAINTAINERS,
    # form-to-mail by an admin: one mail per mirror to its maintainers, or one to the list
    "admin-mail": Audience.MAINTAINERS,
    "admin-mail-list": Audience.LIST,
    # the waiting list (admin.waitinglist)
    "application": Audience.APPLICANT,
    "application-reminder": Audience.APPLICANT,
    "application-accepted": Audience.APPLICANT,
    # `mirrorctl mail test ADDRESS`
    "test": Audience.ADDRESS,
    # maintainers looking after their own mirrors (admin.maintainers): the login link goes to the
    # address that asked for it (only when it is a contact); their changes to the list and to the
    # mirror's other maintainers, so nobody's mirror changes unseen
    "maintainer-login": Audience.ADDRESS,
    "maintainer-edit": Audience.LIST_AND_MAINTAINERS,
}


def recipient(name: str, email: str) -> Recipient:
    """A checked recipient: a bare address, a one-line name (dnsd.validation.maintainer)."""
    m = validation.maintainer(name, email, "recipient")
    return Recipient(m.name, m.email)


def people(records: Iterable) -> tuple[Recipient, ...]:
    """Recipients from anything with .name and .email (maintainer records, applications)."""
    return tuple(Recipient(p.name, p.email) for p in records if p.email)


def for_kind(kind: str, *, list_address: str = "", maintainers: Iterable = (),
             applicant=None, address: str = "") -> tuple[Recipient, ...]:
    """The recipients of one mail of this kind; () when nobody is to get it."""
    aud = AUDIENCE[kind]
    lst = (Recipient("", list_address),) if list_address else ()
    mnt = people(maintainers)
    if aud is Audience.LIST:
        out = lst
    elif aud is Audience.MAINTAINERS:
        out = mnt
    elif aud is Audience.LIST_AND_MAINTAINERS:
        out = lst + mnt
    elif aud is Audience.MAINTAINERS_ELSE_LIST:
        out = mnt or lst
    elif aud is Audience.APPLICANT:
        out = people([applicant]) if applicant is not None else ()
    else:
        out = (Recipient("", address),) if address else ()
    seen, unique = set(), []
    for r in out:
        if address_key(r.email) not in seen:
            seen.add(address_key(r.email))
            unique.append(r)
    return tuple(unique)


# --- contacts: who may look after a mirror -------------------------------------------------------

def address_key(address: str) -> str:
    """How two addresses are compared (recipients, contacts): case does not make another person."""
    return (address or "").strip().lower()


def is_contact(maintainers: Iterable, address: str) -> bool:
    """Is `address` listed among these maintainers (records with .email)?"""
    key = address_key(address)
    return bool(key) and any(address_key(p.email) == key for p in maintainers)


def contact_mirrors(conn, address: str) -> frozenset[int]:
    """The ids of the mirrors that list `address` as a contact now: live ones (dnsd.statuses.LIVE;
    a retired mirror is nobody's to change). Read at each request, so an address taken off a
    mirror loses it at once."""
    from dnsd.records import maintainers as _maint
    from dnsd.statuses import LIVE

    key = address_key(address)
    if not key:
        return frozenset()
    return frozenset(_maint.mirrors_listing(conn, key, LIVE))


def envelope(rcpts: Sequence[Recipient]) -> list[str]:
    """The bare addresses SMTP's RCPT TO gets, checked once more: nothing that is not one bare
    address (no comma, no angle bracket, no line break) can reach the outbox or the SMTP server."""
    return [validation.email(r.email, "recipient") for r in rcpts]


def header(rcpts: Sequence[Recipient]) -> tuple[Address, ...]:
    return tuple(r.header() for r in rcpts)


def stored(rcpts: Sequence[Recipient]) -> str:
    """The outbox `recipients` column: bare addresses, comma-separated (safe: none holds one)."""
    return ",".join(envelope(rcpts))


def from_stored(text: str) -> list[str]:
    return [a for a in (text or "").split(",") if a]
