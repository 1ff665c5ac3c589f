"""Probe mails: jinja2 text templates in probes/templates/, rendered and queued in the caller's
transaction through dnsd.outbox.queue_mail (which sets Auto-Submitted: auto-generated), to the
recipients dnsd.recipients names for the mail's kind.

A template's first line is the subject; the rest is the body. Text mail, so no autoescape; every
value comes from our own table, and StrictUndefined turns a typo into an error in the tests rather
than a blank in a maintainer's mail.
"""

from __future__ import annotations

import functools

import jinja2
import sqlalchemy as sa

from dnsd import recipients
from dnsd.outbox import queue_mail
from dnsd.records import maintainers

HINTS = {
    "refused": "the web server refused the connection: is it running and listening on {addr}?",
    "timeout": "no complete answer within the probe timeout: check the server's load and firewall",
    "dns": "the mirror's host name does not resolve",
    "tls": "the HTTPS certificate does not verify for this name (expired, self-signed, or not "
           "covering every name the mirror serves)",
    "http-status": "the timestamp file did not answer 200 OK (redirects are not followed)",
    "no-timestamp": "the timestamp file does not hold a valid Unix time as its first word",
    "stale": "the timestamp file is old: is the sync job (rsync/cron) still running?",
    "wrong-host": "the web server does not serve the mirror's DNS names as virtual hosts "
                  "(add them as ServerAlias / server_name)",
    "too-large": "the timestamp file is too large: it should hold one line",
    "private-address": "the address in our table is not a public address; tell us the right one",
    "soft-404": "a file that does not exist did not answer 404 Not Found: the host seems to "
                "answer every path (a parked domain, a catch-all or login page in front of the "
                "files); serve the mirror's tree itself and let missing files be 404",
    "canary-missing": "a file every mirror carries is missing: is the sync complete, and does "
                      "it exclude nothing?",
    "canary-size": "a file every mirror carries has the wrong size (truncated?): the sync may "
                   "have been cut short, or the disk is full",
    "canary-hash": "a file every mirror carries differs from the original: the mirror must "
                   "carry the files unmodified (check the sync, the disk, any proxy rewriting "
                   "them)",
    "mirror-info": "/mirror-info is not what a working mirror prints: see the line above for "
                   "the field at fault (site name, rsync settings, manual alias, ...)",
}


@functools.cache
def env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("probes", "templates"), autoescape=False,
        undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)


def render(template: str, **ctx) -> tuple[str, str]:
    """(subject, body) of a template."""
    text = env().get_template(template).render(**ctx)
    subject, _, body = text.partition("\n")
    return subject.strip(), body.lstrip("\n")


def hints_for(error_classes, zone: str, names=(), addresses=()) -> list[str]:
    out = []
    addr = " and ".join(a for a in addresses if a) or "the address in our table"
    for c in dict.fromkeys(error_classes):
        h = HINTS.get(c)
        if h:
            out.append(h.format(addr=addr))
    if "wrong-host" in error_classes and names:
        out.append("names to serve: " + ", ".join(names))
    return out or ["look at the probe lines above; reply to this mail if they make no sense"]


def maintainer_names(people) -> str:
    """'Jane Doe, Ada' for the greeting line of a mail."""
    return ", ".join(p.name for p in people if p.name)


def display_name(m) -> str:
    return m.name or m.hostname


def queue(conn: sa.Connection, cfg, kind: str, template: str, *, mirror_id: int | None = None,
          **ctx) -> int | None:
    """Render and queue one mail to the recipients of its kind (the mirror's maintainers, the
    list, ...: dnsd.recipients.AUDIENCE); None when there is nobody to send it to."""
    people = maintainers.of_mirror(conn, mirror_id) if mirror_id is not None else ()
    to = recipients.for_kind(kind, list_address=cfg.mail.list, maintainers=people)
    if not to:
        return None
    ctx.setdefault("maintainer_names", maintainer_names(people))
    ctx.setdefault("zone", cfg.dns.zone)
    ctx.setdefault("reply_to", cfg.mail.reply_to)
    ctx.setdefault("list", cfg.mail.list)
    subject, body = render(template, **ctx)
    return queue_mail(conn, kind=kind, sender=cfg.mail.from_, to=to, subject=subject, body=body,
                      mirror_id=mirror_id, reply_to=cfg.mail.reply_to)
