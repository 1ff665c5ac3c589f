"""`mirrorctl maintenance add|list|cancel` in a subprocess (tests/test_cli.py's harness): what an
admin types and sees, errors as one line naming the option, the audit record."""

from __future__ import annotations

import datetime as dt
import json

from dnsd.models import utcnow
from tests.test_cli import ctl  # noqa: F401  (the fixture)


def at(hours: float) -> str:
    t = (utcnow() + dt.timedelta(hours=hours)).replace(second=0, microsecond=0)
    return t.strftime("%Y-%m-%d %H:%M")


def test_add_list_cancel(ctl):  # noqa: F811
    ctl.ok("add", "--country", "DE", "--host", "mirror.example.de", "--ipv4", "192.0.2.10",
           "--url", "http://mirror.example.de/", "--maintainer", "Jane <jane@example.de>")
    start, end = at(24), at(26)
    out = ctl.ok("maintenance", "add", "de1", "--start", start, "--end", end, "--reason",
                 "new disks").strip()
    leave = (dt.datetime.fromisoformat(start) - dt.timedelta(seconds=150)).strftime(
        "%Y-%m-%d %H:%M:%S")
    assert out == (f"de1: maintenance #1 {start} UTC to {end} UTC (planned); out of the "
                   f"answers from {leave} UTC")
    table = ctl.ok("maintenance", "list").splitlines()
    assert table[0].split() == ["ID", "MIRROR", "START", "(UTC)", "END", "(UTC)", "STATE", "BY",
                                "REASON"]
    assert table[1].split() == ["1", "de1", *start.split(), *end.split(), "planned", "tester",
                                "new", "disks"]
    (w,) = json.loads(ctl.ok("maintenance", "list", "de1", "--json"))
    assert (w["mirror"], w["state"], w["reason"]) == ("de1", "planned", "new disks")
    show = ctl.ok("show", "de1")
    assert "serving     no: never probed" in show
    assert f"  maintenance #1 {start} UTC to {end} UTC (planned); out of the answers from " \
           f"{leave} UTC: new disks" in show
    assert json.loads(ctl.ok("show", "de1", "--json"))["maintenance"][0]["reason"] == \
        "new disks"
    err = ctl.fails("maintenance", "add", "de1", "--start", at(25), "--end", at(27),
                    "--reason", "again")
    assert err.startswith("mirrorctl: error: --start: the mirror already has maintenance "
                          f"planned from {start} UTC to {end} UTC (window #1)")
    assert ctl.fails("maintenance", "add", "de1", "--start", at(-2), "--end", at(1),
                     "--reason", "x") == "mirrorctl: error: --start: the start is in the past"
    assert ctl.fails("maintenance", "add", "de1", "--start", at(2), "--end", at(1),
                     "--reason", "x") == ("mirrorctl: error: --end: the end must be after the "
                                          "start")
    assert ctl.fails("maintenance", "add", "de1", "--start", at(2), "--end", at(3),
                     "--reason", " ") == "mirrorctl: error: --reason: the reason is empty"
    assert ctl.fails("maintenance", "cancel", "1", "--mirror", "de9") == (
        "mirrorctl: error: no mirror named de9")
    out = ctl.ok("maintenance", "cancel", "1").strip()
    assert out == f"de1: maintenance #1 {start} UTC to {end} UTC (cancelled)"
    assert ctl.ok("maintenance", "list").splitlines()[1:] == []
    assert "cancelled" in ctl.ok("maintenance", "list", "--all")
    assert ctl.fails("maintenance", "cancel", "1") == (
        "mirrorctl: error: window #1 was already cancelled by tester")
    assert ctl.sql("select actor, action from audit where action like 'maint%' order by id") == [
        ("tester", "maintenance-plan"), ("tester", "maintenance-cancel")]
    assert ctl.sql("select kind, recipients from outbox where kind like 'maint%' order by id") == [
        ("maintenance-planned", "list@example.org,jane@example.de"),
        ("maintenance-cancelled", "list@example.org,jane@example.de")]
