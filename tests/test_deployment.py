"""The shipped systemd units (deploy/systemd/) and docs/deployment.md: the units pass
`systemd-analyze verify` where the machine has it and say what the docs promise; every config
block of the deployment guide is a valid config for the unit that reads it. (The multi-node
tests in tests/test_cluster.py start their nodes with these units' ExecStart lines.)"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dnsd.config import ROLES, parse_config

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
GUIDE = ROOT / "docs" / "deployment.md"
ROLE_OF_UNIT = {"mirrordns-dns.service": ("dns",), "mirrordns-probes.service": ("probes",),
                "mirrordns-admin.service": ("admin",), "mirrordns.service": ROLES}


def unit(path: Path) -> configparser.ConfigParser:
    p = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    p.optionxform = str
    p.read_string(path.read_text())
    return p


def config_path(u) -> str:
    (env,) = [e for e in u["Service"]["Environment"].split() if e.startswith("MIRRORDNS_CONFIG=")]
    return env.split("=", 1)[1]


def test_one_unit_per_role_and_one_for_everything():
    assert {u.name for u in UNITS} == set(ROLE_OF_UNIT)


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_the_unit_runs_unprivileged_with_limits_and_restarts(path):
    s = unit(path)["Service"]
    assert s["User"] == s["Group"] == "mirrordns"
    assert s["NoNewPrivileges"] == "yes" and s["ProtectSystem"] == "strict"
    assert int(s["LimitNOFILE"]) >= 65536 and s["UMask"] == "0027"
    assert s["Restart"] == "always" and s["RestartSec"]
    assert s["KillMode"] == "mixed" and int(s["TimeoutStopSec"].rstrip("s")) > 5
    serves_dns = "dns" in ROLE_OF_UNIT[path.name]
    # port 53 needs the one capability; nothing else needs any
    assert s["AmbientCapabilities"] == ("CAP_NET_BIND_SERVICE" if serves_dns else "")
    assert s["CapabilityBoundingSet"] == s["AmbientCapabilities"]
    assert "--nodaemon" in s["ExecStart"] and s["ExecStart"].endswith("/opt/mirrordns/twistd.tac")
    assert config_path(unit(path)).startswith("/etc/mirrordns/")
    # only nodes that write the schema's home migrate it: never a DNS node (it may be a replica)
    assert ("ExecStartPre" in s) == ("admin" in ROLE_OF_UNIT[path.name])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed; the parse above still checks them")
def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    """Verified as installed: /opt/mirrordns is this checkout, its venv the one running here."""
    venv = str(Path(sys.executable).parent.parent)
    for path in UNITS:
        text = path.read_text().replace("/opt/mirrordns/.venv", venv).replace("/opt/mirrordns",
                                                                              str(ROOT))
        (tmp_path / path.name).write_text(text)
    out = subprocess.run(["systemd-analyze", "verify", "--man=no",
                          *[str(tmp_path / p.name) for p in UNITS]],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr.strip() == "" and out.stdout.strip() == "", \
        out.stdout + out.stderr


def guide_configs() -> dict[str, str]:
    """The guide's ```toml blocks, keyed by their first line ('# /etc/mirrordns/x.toml ...')."""
    blocks = re.findall(r"```toml\n(.*?)```", GUIDE.read_text(), re.S)
    assert blocks
    out = {}
    for b in blocks:
        first = b.splitlines()[0]
        assert first.startswith("# /etc/mirrordns/"), first
        out[first[2:]] = b
    return out


def test_every_config_in_the_guide_is_valid_and_names_its_node():
    names = set()
    for title, text in guide_configs().items():
        cfg = parse_config(text, title)
        names.add(cfg.node.name)
        if "probes" in cfg.node.roles:
            assert cfg.probes.vantage == cfg.node.name     # one vantage point per probe node
        if cfg.node.roles == ("dns",):
            assert not cfg.probes.enabled and "0.0.0.0:53" in cfg.dns.listen
    assert len(names) == len(guide_configs())              # every node has a name of its own


@pytest.mark.parametrize("path", [u for u in UNITS if u.name != "mirrordns.service"],
                         ids=lambda p: p.name)
def test_the_guide_gives_the_config_each_unit_reads(path):
    want = config_path(unit(path))
    configs = {t: parse_config(b, t) for t, b in guide_configs().items() if t.startswith(want)}
    assert configs, f"docs/deployment.md has no config block for {want}"
    for cfg in configs.values():
        assert cfg.node.roles == ROLE_OF_UNIT[path.name]
    assert "deploy/systemd/" in GUIDE.read_text() and path.stem in GUIDE.read_text()


def test_the_single_node_unit_is_the_readme_set_up():
    readme = (ROOT / "README.md").read_text()
    assert "deploy/systemd/mirrordns.service" in readme and "docs/deployment.md" in readme
    assert config_path(unit(ROOT / "deploy/systemd/mirrordns.service")) in readme
