"""The configuration files: clear errors, the annotated example, the demo config, zone and loader."""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest
import sqlalchemy as sa

from admin import demo
from admin.passwords import verify_password
from dnsd import config as cfgmod
from dnsd.config import Config, ConfigError, load_config, parse_config
from dnsd.models import mirrors, users

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "mirrordns.example.toml"
DEMO = ROOT / "demo" / "mirrordns.toml"
DOC_NETS = [ipaddress.ip_network(n) for n in
            ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]


def test_unknown_key_names_file_section_and_key(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text('[dns]\nzone = "m.example.org"\nlisten_on = ["127.0.0.1:53"]\n')
    with pytest.raises(ConfigError) as e:
        load_config(str(f))
    assert str(e.value).startswith(f"{f}: unknown key 'listen_on' in [dns] (allowed: ")
    with pytest.raises(ConfigError, match=r"^x.toml: unknown section \[dsn\]"):
        parse_config("[dsn]\nzone = 'a'\n", "x.toml")


@pytest.mark.parametrize("text, message", [
    ('[probes]\ninterval = "5m"', "x.toml: [probes] interval: expected an integer, got a string"),
    ("[probes]\nenabled = 1", "x.toml: [probes] enabled: expected true or false, got an integer"),
    ("[probes]\ninterval = true", "x.toml: [probes] interval: expected an integer, got a boolean"),
    ('[dns]\nlisten = "127.0.0.1:53"', "x.toml: [dns] listen: expected a list of str, got a string"),
    ("[dns]\nlisten = [53]", "x.toml: [dns] listen[0]: expected a string, got an integer"),
    ('[dns]\nlisten = ["localhost"]', "x.toml: [dns] listen: 'localhost' is not host:port"),
    ("dns = 5", "x.toml: [dns] must be a table"),
])
def test_wrong_types_name_file_and_key(text, message):
    with pytest.raises(ConfigError) as e:
        parse_config(text, "x.toml")
    assert str(e.value) == message


def test_missing_file_is_an_error_only_when_asked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MIRRORDNS_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"^gone\.toml: configuration file not found$"):
        load_config("gone.toml")
    monkeypatch.setenv("MIRRORDNS_CONFIG", "env.toml")
    with pytest.raises(ConfigError, match=r"^env\.toml: configuration file not found$"):
        load_config()
    monkeypatch.delenv("MIRRORDNS_CONFIG")
    assert load_config() == Config()                      # no file at all: the defaults
    (tmp_path / "mirrordns.toml").write_text('[dns]\nzone = "here.example"\n')
    assert load_config().dns.zone == "here.example"


def test_the_example_names_every_key_with_its_default():
    """mirrordns.example.toml documents every key: when you add a key, add it there too."""
    data = tomllib.loads(EXAMPLE.read_text())
    text = EXAMPLE.read_text()
    for section in dataclasses.fields(Config):
        if section.name == "path":
            continue
        assert section.name in data, f"[{section.name}] missing from mirrordns.example.toml"
        cls = section.default_factory
        keys = {cfgmod._RENAMED_BACK.get(f.name, f.name) for f in dataclasses.fields(cls)}
        missing = keys - set(data[section.name])
        assert not missing, f"[{section.name}] keys missing from mirrordns.example.toml: {missing}"
    for line in text.splitlines():                           # every key has a comment above it
        if line and not line.startswith(("#", "[")) and "=" in line:
            assert text.splitlines()[text.splitlines().index(line) - 1].startswith("#"), line
    parsed = parse_config(text, str(EXAMPLE))
    assert dataclasses.replace(parsed, path="") == Config(), \
        "a value in mirrordns.example.toml differs from the default in dnsd/config.py"


def test_demo_config_and_zone_file():
    cfg = load_config(str(DEMO))
    assert cfg.probes.enabled is False and cfg.dns.listen == ("127.0.0.1:5353",)
    zone_path = cfg.resolve_path(cfg.dns.zone_file)
    assert zone_path.resolve() == ROOT / "zones" / "mirrors.example.org.zone"
    assert cfg.resolve_path("../var/x").resolve() == ROOT / "var" / "x"
    z = dns.zone.from_text(zone_path.read_text(), origin=cfg.dns.zone + ".", relativize=False)
    apex = z.get_node(cfg.dns.zone + ".")
    for t in ("SOA", "NS", "A", "AAAA", "MX", "TXT"):
        assert apex.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(t)), t
    for name, node in z.nodes.items():
        for rds in node.rdatasets:
            for rd in rds:
                if rds.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    assert any(ipaddress.ip_address(rd.address) in n for n in DOC_NETS), name
    labels = {str(n).split(".")[0] for n in z.nodes if str(n) != cfg.dns.zone + "."}
    assert labels == {"ns1", "ns2", "status"}       # nothing that collides with mirror names


def test_demo_loader_is_idempotent(tmp_path, capsys):
    conf = tmp_path / "demo.toml"
    conf.write_text(DEMO.read_text().replace("sqlite:///../var/mirrordns.sqlite",
                                             "sqlite:///var/demo.sqlite"))
    assert demo.main(["--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "88 demo mirrors added, 88 mirrors in the table" in out
    assert "dig @127.0.0.1 -p 5353 www.mirrors.example.org A" in out
    assert "login admin / demo" in out
    assert demo.main(["--config", str(conf)]) == 0
    assert "0 demo mirrors added, 88 mirrors in the table" in capsys.readouterr().out
    e = sa.create_engine(f"sqlite:///{tmp_path}/var/demo.sqlite")
    with e.connect() as c:
        rows = c.execute(sa.select(mirrors)).all()
        (pw,) = c.execute(sa.select(users.c.password_hash)).one()
    e.dispose()
    assert verify_password(pw, demo.DEMO_PASSWORD)
    assert len({r.ipv4 for r in rows}) == 88
    for r in rows:
        assert r.source == f"demo:{r.hostname}"
        for a in (r.ipv4, r.ipv6):
            assert a is None or any(ipaddress.ip_address(a) in n for n in DOC_NETS), a
    assert sum(1 for r in rows if r.ipv6) > 40
    by_name = {r.name: r for r in rows}
    assert by_name["de2"].ipv4.startswith("192.0.2.") and by_name["us1"].ipv4.startswith("198.51.100.")
    assert by_name["jp1"].ipv4.startswith("203.0.113.") and by_name["us3"].status == "disabled-by-admin"
