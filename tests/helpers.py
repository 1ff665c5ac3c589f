"""Helpers for tests: the test geo database, free ports, processes."""

from __future__ import annotations

import os
import socket
import subprocess

from mmdb_writer import MMDBWriter
from netaddr import IPSet

# Same layout as ../shared/reference/dns-peers/make_mmdb.py (the benchmark's database), plus a few
# countries for region and continent fallback tests. Loopback and documentation ranges only.
CONTINENTS = {
    "EU": {"code": "EU", "geoname_id": 6255148, "names": {"en": "Europe"}},
    "NA": {"code": "NA", "geoname_id": 6255149, "names": {"en": "North America"}},
    "AS": {"code": "AS", "geoname_id": 6255147, "names": {"en": "Asia"}},
    "SA": {"code": "SA", "geoname_id": 6255150, "names": {"en": "South America"}},
}
COUNTRIES = {
    "DE": ("EU", 2921044, "Germany"),
    "US": ("NA", 6252001, "United States"),
    "FR": ("EU", 3017382, "France"),
    "JP": ("AS", 1861060, "Japan"),
    "AT": ("EU", 2782113, "Austria"),
    "BR": ("SA", 3469034, "Brazil"),
}
NETS = {
    "DE": ["127.0.1.0/24", "192.0.2.0/24", "2001:db8:de::/48"],
    "US": ["127.0.2.0/24", "198.51.100.0/24", "2001:db8:5::/48"],
    "FR": ["127.0.3.0/24", "203.0.113.0/24"],
    "JP": ["127.0.4.0/24"],
    "AT": ["127.0.5.0/24", "2001:db8:a7::/48"],
    "BR": ["127.0.6.0/24"],
}


def geo_record(cc: str) -> dict:
    cont, gid, name = COUNTRIES[cc]
    return {
        "continent": CONTINENTS[cont],
        "country": {"iso_code": cc, "geoname_id": gid, "names": {"en": name}},
        "registered_country": {"iso_code": cc, "geoname_id": gid, "names": {"en": name}},
    }


def write_test_mmdb(path: str) -> None:
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country",
                   languages=["en"], description={"en": "mirrordns test DB (fake data)"})
    for cc, nets in NETS.items():
        w.insert_network(IPSet(nets), geo_record(cc))
    w.to_db_file(path)


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on host (racy by nature; good enough on loopback)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind((host, 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((host, port))
                except OSError:
                    continue
            return port


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()          # state, ppid, ...


def children_of(pid: int) -> list[int]:
    """The live (not zombie) child processes of pid, from /proc."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = _stat(int(d))
                if int(st[1]) == pid and st[0] != "Z":
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, and SIGKILL when it has not ended within `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class MailRecorder:
    """An aiosmtpd handler keeping (recipients, parsed message) of every mail it is handed:
    ``Controller(MailRecorder(), hostname="127.0.0.1", port=free_port())``."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        import email
        import email.policy

        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 OK"
