"""The TOML configuration, read once into frozen dataclasses.

Every section is a frozen dataclass whose fields are the allowed keys with their defaults; an unknown
key, a wrong type or a missing file is a `ConfigError` whose message names the file and the key, so
an operator's typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONFIG = "mirrordns.toml"
ENV_VAR = "MIRRORDNS_CONFIG"


class ConfigError(Exception):
    """A configuration problem, worded for the operator (file, key, what was expected)."""


ROLES = ("dns", "probes", "admin")


@dataclass(frozen=True)
class NodeConfig:
    roles: tuple[str, ...] = ROLES        # the parts this process runs (twistd.tac composes them)
    name: str = ""                        # this node's name in claims and logs ("" = host name)

    @property
    def identity(self) -> str:
        """Who this node is in outbox claims and logs: `name`, else the host name."""
        import socket

        return self.name or socket.gethostname()


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///var/mirrordns.sqlite"
    pool_threads: int = 4                 # threads of the table's own pool (SQLite uses 1 writer)


@dataclass(frozen=True)
class DNSConfig:
    zone: str = "mirrors.example.org"
    zone_file: str = "zones/mirrors.example.org.zone"
    listen: tuple[str, ...] = ("127.0.0.1:5353",)
    geo_name: str = "www"
    apex_geo: bool = False                # also answer the zone apex by client location
    continent_names: bool = True          # eu.Z, na.Z, ... answered like country names
    ttl: int = 150                        # TTL of mirror answers
    answers: int = 2                      # addresses per reply
    min_candidates: int = 2               # a tier with fewer serving mirrors borrows from the next
    share_cap: float = 0.0                # max share of one mirror in a tier (0 = no cap)
    distance_weighting: bool = False      # scale weights down by great-circle distance
    max_sync_age: int = 86400             # seconds; older mirrors are stale: not serving, and a
                                          # probe reading such a timestamp fails ("stale")
    age_filter_backups: bool = False      # max_sync_age applies to backup mirrors too (closer.lua
                                          # never age-filtered its backups: the last resort)
    ring_size: int = 64                   # pre-encoded answers per (name, type, location)
    poll_interval: float = 1.0            # seconds between table version checks
    notify: bool = True                   # PostgreSQL: also follow the version by LISTEN/NOTIFY
    rebuild_interval: float = 60.0        # rebuild even without a version change (sync ages move)
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 0          # TCP connections held (0: half the fd limit, <= 4096)
    tcp_max_per_address: int = 64         # ... from one client address
    tcp_max_unsent: int = 65536           # reply bytes queued per connection before reads pause
    tcp_backlog: int = 1024               # listen backlog of the TCP sockets
    workers: int = 1                      # DNS processes beside the web (0 = answer in it)
    snapshot_dir: str = "var/snapshot"    # where each DNS process keeps the last plan it served
    cookies: bool = True                  # answer DNS Cookies (RFC 7873, RFC 9018)
    cookie_secret_file: str = ""          # secrets, one per line, 32 hex digits; "" = random
    nsid: str = ""                        # NSID (RFC 5001) sent to clients that ask; "" = none
    rrl_rate: float = 0.0                 # UDP responses per second per client prefix; 0 = off
    rrl_slip: int = 2                     # every Nth limited response goes out truncated
    rrl_ipv4_prefix: int = 24
    rrl_ipv6_prefix: int = 56
    rrl_exempt: tuple[str, ...] = ()      # prefixes never limited


@dataclass(frozen=True)
class GeoIPConfig:
    database: str = ""                    # empty = the bundled GeoLite2 City from maxminddb-geolite2
    cache_size: int = 65536               # client location keys kept in memory
    index_cache: str = "var/geoip"        # folder keeping compiled lookups ("" = rebuild each start)
    reload_interval: float = 60.0         # seconds between checks of the file for a new version


@dataclass(frozen=True)
class AdminConfig:
    listen: str = "127.0.0.1:8080"
    base_url: str = ""                    # public URL of the admin, for links in mails
    https: bool = False                   # served behind https: cookies get Secure
    session_hours: int = 12
    session_idle_minutes: int = 60        # a session unused this long ends
    metrics: bool = True                  # /metrics on the admin listener
    trusted_proxies: tuple[str, ...] = () # X-Forwarded-For is believed only from these
    public_title: str = "Mirrors"
    application_reminder_days: int = 91   # "are you still willing?" mails to the waiting list
    apply_rate_limit: int = 10            # application-form POSTs per visitor address per window
    apply_rate_window: int = 3600         # seconds (IPv6 visitors are counted per /64)
    login_free_failures: int = 5          # failed logins per (user, address) before delays
    login_address_free_failures: int = 20 # failed logins per address (any user) before delays
    login_max_delay: int = 900            # seconds: the longest wait the back-off imposes
    maintainer_link_minutes: int = 15     # a maintainer's mailed login link works this long, once
    maintainer_link_rate_limit: int = 5   # link requests per visitor address per window
    maintainer_link_address_limit: int = 3  # links mailed to one address per window
    maintainer_link_window: int = 3600    # seconds
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")  # who may read /metrics
    max_body: int = 65536                 # bytes of a POST body; larger gets 413 unread
    request_timeout: float = 10.0         # seconds for a whole request to arrive (then 408)
    idle_timeout: float = 30.0            # seconds a kept-alive connection may sit unused


@dataclass(frozen=True)
class ProbesConfig:
    enabled: bool = True
    interval: int = 300
    timeout: float = 15.0
    connect_timeout: float = 5.0
    timestamp_path: str = "TIME"
    timestamp_format: str = "mirmon"      # mirmon | phpnet | debian-trace
    fail_after: int = 3
    pass_after: int = 2
    allow_private: bool = False           # also lets the table hold private addresses, and the
                                          # probes and closer HEAD checks reach them
    nameservers: tuple[str, ...] = ()     # host:port of DNS servers for mirrors' host names
                                          # (empty = the system's resolver)
    concurrency: int = 200
    max_body: int = 65536
    follow_redirects: bool = False
    user_agent: str = "mirrordns-probe/0.1 (+https://mirrors.example.org/)"
    keep_raw_days: int = 14
    keep_hourly_days: int = 90
    keep_daily_days: int = 400            # daily rollups older than this are dropped
    vantage: str = ""                     # this probe node's name, stored with each result
    stats_interval: int = 600             # seconds between uptime/rtt refreshes and rollups
    min_pass_share: float = 0.5           # a vantage that sees fewer pass in a cycle is broken
    quorum: int = 0                       # vantages that must agree (0 = a majority of those
                                          # that count)
    not_found_check: bool = True          # a random path must answer 404 (else "soft-404")
    canary_path: str = ""                 # a file every mirror carries, below its base URL, whose
                                          # size and SHA-256 the origin publishes ("" = none)
    canary_origin: str = ""               # the origin's base URL for it and <canary_path>.sha256
                                          # ("" = [closer] origin_url)
    canary_full_share: float = 0.1        # share of probes fetching the canary whole (SHA-256);
                                          # the others ask for one byte of it (its size)
    mirror_info_check: bool = True        # timestamp_format "phpnet": check /mirror-info's fields
    request_poll: float = 2.0             # seconds between checks for "probe now" requests
    request_gap: float = 60.0             # seconds between two probes of one mirror on request


@dataclass(frozen=True)
class ReportsConfig:
    """Reports from downloaders (admin.mirror_reports)."""

    enabled: bool = True                  # the public form, the JSON endpoint and the links
    threshold: int = 3                    # reports (from distinct networks) in `window` that mail
    window: int = 3600                    # seconds; also how long the admin pages call them recent
    rate_limit: int = 5                   # reports per visitor network per rate_window (per node)
    rate_window: int = 3600
    ipv4_prefix: int = 24                 # a visitor's network: its IPv4 /24 ...
    ipv6_prefix: int = 56                 # ... or IPv6 /56
    keep_days: int = 30                   # reports older than this are deleted


@dataclass(frozen=True)
class MailConfig:
    smtp: str = "127.0.0.1:25"
    from_: str = "mirrors@example.org"
    list: str = "mirrors@lists.example.org"
    reply_to: str = ""
    username: str = ""
    password_file: str = ""
    starttls: bool = False
    retry_max: int = 20                   # attempts before a mail is parked as failed
    retry_base: float = 60.0              # seconds before the first retry; doubles, capped at 6 h
    poll_interval: float = 5.0            # seconds between outbox checks
    claim_lease: float = 300.0            # seconds a sender holds the mails it claimed
    reminder_hours: int = 24              # daily reminder while disabled / out of sync this long


@dataclass(frozen=True)
class CloserConfig:
    document_root: str = ""               # where project <name>.html/.ezt templates live
    dist_root: str = ""                   # the distribution tree, to tell "not in dist"
    dist_refresh: int = 60                # seconds between two walks of dist_root (worker thread)
    project: str = "Example"
    allow_http: bool = True
    archive_url: str = "https://archive.example.org/dist/"
    head_check: bool = False
    head_check_ttl: int = 300
    head_timeout: float = 2.0             # seconds for one HEAD of action=download's check
    origin_url: str = ""                  # the project's own site: checksums, signatures and KEYS
                                          # are sent there, never to a mirror
    origin_files: tuple[str, ...] = ("*.asc", "*.sig", "*.md5", "*.sha1", "*.sha256", "*.sha512",
                                     "KEYS")     # file names (glob) only the origin serves
    attic_root: str = ""                  # folder of retired projects' <project>.html pages
    attic_url: str = "https://attic.example.org/projects/"   # where those pages are served
    archive_aware: bool = False           # look paths not in dist up in the archive (HEAD)
    duplicates: int = 4                   # further mirrors in action=download's Link header
    origins: dict[str, str] = field(default_factory=dict)  # [closer.origins] project = URL


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    dns: DNSConfig = field(default_factory=DNSConfig)
    geoip: GeoIPConfig = field(default_factory=GeoIPConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    mail: MailConfig = field(default_factory=MailConfig)
    closer: CloserConfig = field(default_factory=CloserConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    path: str = ""                        # the file this came from ("" = built-in defaults)

    @property
    def base_dir(self) -> Path:
        return Path(self.path).resolve().parent if self.path else Path.cwd()

    def resolve_path(self, p: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else self.base_dir / q


# TOML keys that are Python keywords or builtins get a trailing underscore in the dataclass.
_RENAMED = {"from": "from_"}


def _check_type(value, tp, where: str):
    """Return value converted to tp (lists become tuples), or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin is dict:                   # a subtable of names: [closer.origins]
        (ktp, vtp) = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {_tname(value)}")
        return {_check_type(k, ktp, where): _check_type(v, vtp, f"{where}.{k}")
                for k, v in value.items()}
    if origin is tuple:
        (inner, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {inner.__name__}, got {_tname(value)}")
        return tuple(_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise AssertionError("unions are not used in config dataclasses")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got a boolean")
    if not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_TYPE_WORDS.get(tp, tp.__name__)}, got {_tname(value)}")
    return value


_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _tname(v) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def _section(cls, data: dict, fname: str, section: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{fname}: [{section}] must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        attr = _RENAMED.get(key, key)
        if attr not in names:
            allowed = ", ".join(sorted(_RENAMED_BACK.get(n, n) for n in names))
            raise ConfigError(f"{fname}: unknown key '{key}' in [{section}] (allowed: {allowed})")
        kwargs[attr] = _check_type(value, hints[attr], f"{fname}: [{section}] {key}")
    return cls(**kwargs)


_RENAMED_BACK = {v: k for k, v in _RENAMED.items()}


def parse_config(text: str, fname: str = "<string>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{fname}: not valid TOML: {e}") from None
    hints = typing.get_type_hints(Config)
    sections = {f.name for f in dataclasses.fields(Config) if f.name != "path"}
    kwargs = {}
    for name, value in data.items():
        if name not in sections:
            raise ConfigError(f"{fname}: unknown section [{name}] (allowed: {', '.join(sorted(sections))})")
        kwargs[name] = _section(hints[name], value, fname, name)
    cfg = Config(**kwargs, path=fname if fname != "<string>" else "")
    _validate(cfg, fname)
    return cfg


def _validate(cfg: Config, fname: str) -> None:
    roles = cfg.node.roles
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles or len(set(roles)) != len(roles):
        raise ConfigError(f"{fname}: [node] roles: a list of distinct roles out of "
                          f"{', '.join(ROLES)} (got {list(roles)})")
    d = cfg.dns
    if not d.zone or d.zone.startswith(".") or " " in d.zone:
        raise ConfigError(f"{fname}: [dns] zone: '{d.zone}' is not a domain name")
    if not d.listen:
        raise ConfigError(f"{fname}: [dns] listen: at least one address:port is needed")
    for hp in d.listen:
        split_hostport(hp, f"{fname}: [dns] listen")
    split_hostport(cfg.admin.listen, f"{fname}: [admin] listen")
    split_hostport(cfg.mail.smtp, f"{fname}: [mail] smtp")
    if d.answers < 1:
        raise ConfigError(f"{fname}: [dns] answers: must be at least 1")
    if not 0 <= d.share_cap <= 1:
        raise ConfigError(f"{fname}: [dns] share_cap: must be between 0 and 1")
    if d.workers < 0:
        raise ConfigError(f"{fname}: [dns] workers: 0 (DNS in the main process) or more")
    a = cfg.admin
    if a.session_hours < 1 or a.session_idle_minutes < 1:
        raise ConfigError(f"{fname}: [admin] session_hours and session_idle_minutes must be at "
                          "least 1")
    if a.max_body < 1024 or a.request_timeout <= 0 or a.idle_timeout <= 0:
        raise ConfigError(f"{fname}: [admin] max_body must be at least 1024 bytes, "
                          "request_timeout and idle_timeout positive")
    if a.login_free_failures < 1 or a.login_address_free_failures < 1 or a.login_max_delay < 1:
        raise ConfigError(f"{fname}: [admin] login_free_failures, login_address_free_failures "
                          "and login_max_delay must be at least 1")
    if min(a.maintainer_link_minutes, a.maintainer_link_rate_limit,
           a.maintainer_link_address_limit, a.maintainer_link_window) < 1:
        raise ConfigError(f"{fname}: [admin] maintainer_link_minutes, maintainer_link_rate_limit, "
                          "maintainer_link_address_limit and maintainer_link_window must be at "
                          "least 1")
    if d.tcp_max_connections < 0 or d.tcp_max_per_address < 1 or d.tcp_max_unsent < 1024:
        raise ConfigError(f"{fname}: [dns] tcp_max_connections must be 0 or more, "
                          f"tcp_max_per_address at least 1, tcp_max_unsent at least 1024")
    if d.tcp_backlog < 1:
        raise ConfigError(f"{fname}: [dns] tcp_backlog: must be at least 1")
    if d.rrl_rate < 0 or d.rrl_slip < 0:
        raise ConfigError(f"{fname}: [dns] rrl_rate and rrl_slip must be 0 or more")
    if not 8 <= d.rrl_ipv4_prefix <= 32 or not 16 <= d.rrl_ipv6_prefix <= 128:
        raise ConfigError(f"{fname}: [dns] rrl_ipv4_prefix: 8..32, rrl_ipv6_prefix: 16..128")
    for net in d.rrl_exempt:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"{fname}: [dns] rrl_exempt: '{net}' is not an address or "
                              f"prefix") from None
    try:
        d.nsid.encode("ascii")
    except UnicodeEncodeError:
        raise ConfigError(f"{fname}: [dns] nsid: ASCII only") from None
    r = cfg.reports
    if r.threshold < 1 or r.window < 1 or r.rate_limit < 1 or r.rate_window < 1 or r.keep_days < 1:
        raise ConfigError(f"{fname}: [reports] threshold, window, rate_limit, rate_window and "
                          "keep_days must be at least 1")
    if not 8 <= r.ipv4_prefix <= 32 or not 16 <= r.ipv6_prefix <= 128:
        raise ConfigError(f"{fname}: [reports] ipv4_prefix: 8..32, ipv6_prefix: 16..128")
    if cfg.mail.claim_lease <= 0:
        raise ConfigError(f"{fname}: [mail] claim_lease must be positive")
    p = cfg.probes
    if p.fail_after < 1 or p.pass_after < 1:
        raise ConfigError(f"{fname}: [probes] fail_after and pass_after must be at least 1")
    if p.interval < 1 or p.timeout <= 0:
        raise ConfigError(f"{fname}: [probes] interval and timeout must be positive")
    if p.request_poll <= 0 or p.request_gap < 0:
        raise ConfigError(f"{fname}: [probes] request_poll must be positive, request_gap 0 or "
                          "more")
    if not 0 <= p.min_pass_share <= 1 or p.quorum < 0:
        raise ConfigError(f"{fname}: [probes] min_pass_share must be between 0 and 1, quorum 0 "
                          "or more")
    for hp in p.nameservers:
        split_hostport(hp, f"{fname}: [probes] nameservers")
    if p.timestamp_format not in ("mirmon", "phpnet", "debian-trace"):
        raise ConfigError(f"{fname}: [probes] timestamp_format: one of mirmon, phpnet, debian-trace")
    if not 0 <= p.canary_full_share <= 1:
        raise ConfigError(f"{fname}: [probes] canary_full_share must be between 0 and 1")
    if p.canary_path and not canary_origin(cfg):
        raise ConfigError(f"{fname}: [probes] canary_path needs the origin that publishes it: "
                          "[probes] canary_origin or [closer] origin_url")
    for key, url in (("[probes] canary_origin", p.canary_origin),
                     ("[closer] origin_url", cfg.closer.origin_url),
                     *((f"[closer.origins] {k}", v) for k, v in cfg.closer.origins.items())):
        if url and not url.startswith(("https://", "http://")):
            raise ConfigError(f"{fname}: {key}: '{url}' is not an http or https URL")


def canary_origin(cfg: Config) -> str:
    """Where the probes read the canary's published size and SHA-256."""
    return cfg.probes.canary_origin or cfg.closer.origin_url


def split_hostport(hp: str, where: str = "address") -> tuple[str, int]:
    """'127.0.0.1:53' or '[::1]:53' -> (host, port), with a clear error."""
    host, sep, port = hp.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"{where}: '{hp}' is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: port {port} out of range")
    return host, int(port)


def find_config_path(cli_path: str | None = None) -> str | None:
    """--config FILE, else $MIRRORDNS_CONFIG, else ./mirrordns.toml if it exists, else None."""
    if cli_path:
        return cli_path
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None


def load_config(path: str | None = None) -> Config:
    """Load the config found by the usual rule; the built-in defaults when there is no file at all.

    A path that was given explicitly (flag or environment) and does not exist is an error.
    """
    found = find_config_path(path)
    if found is None:
        return Config()
    try:
        text = Path(found).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{found}: configuration file not found") from None
    except OSError as e:
        raise ConfigError(f"{found}: cannot read configuration: {e.strerror}") from None
    return parse_config(text, str(found))
