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
from dnsd.errors import Invalid


@dataclass(frozen=True)
class Recipient:
    name: str
    email: str

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email

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


@dataclass(frozen=True)
class LeftOut:
    """Somebody the audience names who will not get the mail, and why (for a person to read
    before sending: the mail form shows these beside the recipients)."""

    name: str
    email: str
    reason: str

    def __str__(self) -> str:
        who = f"{self.name} <{self.email}>" if self.name and self.email else (
            self.name or self.email or "(nobody)")
        return f"{who}: {self.reason}"


@dataclass(frozen=True)
class Delivery:
    """Who gets one mail of a kind (`to`), and who is left out and why (`left_out`)."""

    to: tuple[Recipient, ...]
    left_out: tuple[LeftOut, ...]


def _sorted_out(people_: Iterable, role: str) -> tuple[list[Recipient], list[LeftOut]]:
    """Recipients that can be written to (dnsd.validation's rules), and the rest with why."""
    ok: list[Recipient] = []
    out: list[LeftOut] = []
    for p in people_:
        name, addr = getattr(p, "name", "") or "", getattr(p, "email", "") or ""
        if not addr.strip():
            out.append(LeftOut(name, "", f"no mail address is known for this {role}"))
            continue
        try:
            ok.append(recipient(name, addr))
        except Invalid as e:
            out.append(LeftOut(name, addr, e.message))
    return ok, out


def audience(kind: str, *, list_address: str = "", maintainers: Iterable = (),
             applicant=None, address: str = "") -> Delivery:
    """The one rule of who receives a mail of this kind: `AUDIENCE[kind]`, minus addresses that
    cannot be written to (none, or not one bare address by dnsd.validation), each address once.
    Everybody the kind names and who does not get it is in `left_out`, with the reason."""
    aud = AUDIENCE[kind]
    maintainers = list(maintainers)
    lst, lst_out = _sorted_out([Recipient("", list_address)] if list_address else [], "list")
    mnt, mnt_out = _sorted_out(maintainers, "maintainer")
    left: list[LeftOut] = []
    if aud in (Audience.MAINTAINERS, Audience.LIST_AND_MAINTAINERS,
               Audience.MAINTAINERS_ELSE_LIST) and not maintainers:
        left.append(LeftOut("the maintainers", "", "no maintainer is listed for this mirror"))
    if not list_address and (aud in (Audience.LIST, Audience.LIST_AND_MAINTAINERS)
                             or (aud is Audience.MAINTAINERS_ELSE_LIST and not mnt)):
        left.append(LeftOut("the list", "", "no list address is configured ([mail] list)"))
    if aud is Audience.LIST:
        out, left = lst, left + lst_out
    elif aud is Audience.MAINTAINERS:
        out, left = mnt, left + mnt_out
    elif aud is Audience.LIST_AND_MAINTAINERS:
        out, left = lst + mnt, left + lst_out + mnt_out
    elif aud is Audience.MAINTAINERS_ELSE_LIST:
        out, left = (mnt, mnt_out) if mnt else (lst, mnt_out + lst_out)
    elif aud is Audience.APPLICANT:
        out, left = _sorted_out([applicant] if applicant is not None else [], "applicant")
    else:
        out, left = _sorted_out([Recipient("", address)] if address else [], "address")
    seen: set[str] = set()
    unique = []
    for r in out:
        key = address_key(r.email)
        if key not in seen:
            seen.add(key)
            unique.append(r)
        else:
            left.append(LeftOut(r.name, r.email, "the same address is listed twice: it gets "
                                                 "one copy"))
    return Delivery(tuple(unique), tuple(left))


def for_kind(kind: str, **who) -> tuple[Recipient, ...]:
    """The recipients of one mail of this kind; () when nobody is to get it (see `audience`)."""
    return audience(kind, **who).to


def why_not(kind: str, **who) -> tuple[LeftOut, ...]:
    """Who a mail of this kind names but will not reach, and why (see `audience`)."""
    return audience(kind, **who).left_out


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
