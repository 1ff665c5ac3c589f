"""`[node] roles`: twistd.tac composes only the parts a node runs."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from twisted.application.internet import TimerService

from dnsd.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[1]


def compose(tmp_path, monkeypatch, roles):
    conf = tmp_path / "node.toml"
    conf.write_text(f"""
[node]
roles = {roles!r}
name = "test-node"
[database]
url = "sqlite:///{tmp_path}/m.sqlite"
[dns]
zone_file = "{ROOT}/zones/mirrors.example.org.zone"
listen = ["127.0.0.1:0"]
[admin]
listen = "127.0.0.1:0"
""".replace("'", '"'))
    monkeypatch.setenv("MIRRORDNS_CONFIG", str(conf))
    ns = runpy.run_path(str(ROOT / "twistd.tac"))
    from twisted.application.service import IServiceCollection

    top = IServiceCollection(ns["application"])
    (node,) = list(top)
    assert node.name == "db-pool"       # every part under the pool: it closes last
    tree = {s.name: s for s in node}
    ns["pool"].stop()
    return tree


@pytest.mark.parametrize("roles, parts", [
    (["dns", "probes", "admin"], {"dns", "probes", "admin"}),
    (["dns"], {"dns"}),
    (["probes"], {"probes"}),
    (["admin"], {"dns", "admin"}),
    (["admin", "probes"], {"dns", "admin", "probes"}),
])
def test_the_tac_composes_the_roles_of_the_config(tmp_path, monkeypatch, roles, parts):
    tree = compose(tmp_path, monkeypatch, roles)
    assert set(tree) == parts
    if "dns" in tree:
        listeners = [s for s in tree["dns"] if not isinstance(s, TimerService)]
        # a DNS node listens; the admin node only follows the plan for its closer and pages
        assert bool(listeners) == ("dns" in roles)


def test_roles_are_checked():
    assert parse_config("").node.roles == ("dns", "probes", "admin")
    for bad in ('["dns", "web"]', "[]", '["dns", "dns"]'):
        with pytest.raises(ConfigError, match=r"^x.toml: \[node\] roles: a list of distinct"):
            parse_config(f"[node]\nroles = {bad}\n", "x.toml")
