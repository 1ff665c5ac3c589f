"""mirrorctl subcommands of the probes part: `probe NAME` and `mail test ADDRESS`.

These two need the network, so (unlike the rest of mirrorctl) they run a reactor, with
`task.react`; the table is still read synchronously before the reactor starts. Registered in
admin/cli.py's REGISTRARS.
"""

from __future__ import annotations

import sys

from dnsd import recipients, validation
from dnsd.errors import Refused
from dnsd.outbox import build_message


class _Fail(Exception):
    pass


def register_probe(sub):
    p = sub.add_parser("probe", help="probe one mirror now and print what the probe sees")
    p.add_argument("mirror", metavar="NAME", help="mirror name (de2) or host name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)


def register_mail(sub):
    p = sub.add_parser("mail", help="mail settings")
    msub = p.add_subparsers(dest="mail_command", required=True, metavar="ACTION")
    t = msub.add_parser("test", help="send a test mail now through [mail] smtp")
    t.add_argument("address", metavar="ADDRESS")
    t.set_defaults(func=cmd_mail_test)


def _geo(cfg):
    """The GeoLocator for the geo check, or None (then the check is skipped, with a note)."""
    try:
        from dnsd.geo import GeoLocator

        path = str(cfg.resolve_path(cfg.geoip.database)) if cfg.geoip.database else ""
        return GeoLocator(path, 1024)
    except Exception as e:                     # a missing database must not stop a probe
        print(f"mirrorctl: note: no geo check ({e})", file=sys.stderr)
        return None


def cmd_probe(args, ctx):
    from dnsd import serving
    from dnsd.config import ConfigError
    from dnsd.serving import fmt_age
    from probes.probe import CanaryUnavailable, Prober, utc_from_ts
    from probes.store import load_target

    cfg = ctx.cfg
    with ctx.transaction() as conn:
        t = load_target(conn, args.mirror, cfg.dns.zone, cfg.dns.geo_name)
    if t is None:
        raise ConfigError(f"no mirror named {args.mirror!r}")
    geo = _geo(cfg)
    out = {}

    async def main(reactor):
        prober = Prober(cfg, reactor, geo=geo)
        if cfg.probes.canary_path:
            try:
                prober.canary = await prober.load_canary()
            except CanaryUnavailable as e:
                print(f"mirrorctl: note: no canary check ({e})", file=sys.stderr)
        out["r"] = await prober.probe(t)

    from twisted.internet import defer, task

    try:
        task.react(lambda r: defer.ensureDeferred(main(r)))
    except SystemExit as e:                     # react always exits; the result is in `out`
        if e.code:
            return e.code
    r = out["r"]
    if args.json:
        import dataclasses
        import json

        print(json.dumps(dataclasses.asdict(r), indent=2, default=str))
        return 0 if r.ok else 1
    print(f"{t.name or t.hostname} ({t.hostname}, {t.country}): {'PASS' if r.ok else 'FAIL'}"
          + ("" if r.ok else f"  {r.error_class}: {r.error}"))
    for line in r.log_lines():
        print(f"  {line}")
    if r.timestamp:
        print(f"  sync        {utc_from_ts(r.timestamp):%Y-%m-%d %H:%M:%S} UTC, "
              f"{fmt_age(r.sync_age)} ago ({serving.freshness(r.sync_age, cfg)})")
    if r.resolved:
        print(f"  addresses   {r.probed_ipv4 or '-'}  {r.probed_ipv6 or '-'} (resolved from "
              f"{t.hostname}; the table pins none)")
    def fam(v):
        return "-" if v is None else ("up" if v else "DOWN")

    print(f"  health      IPv4 {fam(r.ipv4_up)}, IPv6 {fam(r.ipv6_up)}, HTTPS {fam(r.https_ok)}")
    if r.geo_check:
        print(f"  geo check   {r.geo_check}")
    if r.mirror_info is not None:
        i = r.mirror_info
        print(f"  mirror-info {i.site} PHP {i.php_version}, language {i.language}, search "
              f"{i.search}, stats {i.stats}, rsync {'ok' if i.rsync_ok else 'NOT SET UP'}")
    return 0 if r.ok else 1


def cmd_mail_test(args, ctx):
    from twisted.internet import defer, task

    from admin.cli import CliError
    from admin.outbox import OutboxSender

    try:
        to = recipients.for_kind("test", address=validation.email(args.address, "address"))
    except Refused as e:
        raise CliError(str(e)) from None
    cfg = ctx.cfg
    msg = build_message(
        sender=cfg.mail.from_, to=to, reply_to=cfg.mail.reply_to,
        subject="mirrordns test mail",
        body=f"This is a test mail from mirrordns ({cfg.dns.zone}), sent by {ctx.actor} with\n"
             f"`mirrorctl mail test`. If you read this, [mail] smtp = {cfg.mail.smtp} works.\n")
    result = {}

    async def main(reactor):
        sender = OutboxSender(cfg, None, reactor)
        try:
            result["ok"] = await sender.send(recipients.envelope(to), msg.as_bytes())
        except Exception as e:
            result["error"] = f"{type(e).__name__}: {e}"

    try:
        task.react(lambda r: defer.ensureDeferred(main(r)))
    except SystemExit:
        pass
    if "error" in result:
        print(f"mirrorctl: error: mail to {args.address} via {cfg.mail.smtp} failed: "
              f"{result['error']}", file=sys.stderr)
        return 1
    print(f"sent a test mail to {args.address} via {cfg.mail.smtp}")
    return 0
