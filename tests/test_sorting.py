"""Sortable tables (admin.web.sorting): the rule on plain rows, then the admin and the public
mirror lists over HTTP (StubTreq), in the order a click on a column header asks for."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from html import unescape

import pytest
from treq.testing import StubTreq
from twisted.web import resource

from admin import store
from admin.web import public, sorting
from dnsd.models import mirror_health
from dnsd.validation import Rules
from tests.test_admin_web import AdminWebCase, add_mirror
from tests.test_public_pages import Base, add
from tests.webfakes import T0


@dataclass
class Row:
    name: str
    score: float | None = None


TABLE = sorting.Table((
    sorting.Column("name", lambda r: sorting.natural(r.name)),
    sorting.Column("score", lambda r: r.score, first=sorting.DESC),
), default="name")


class FakeRequest:
    def __init__(self, uri: bytes):
        self.uri = uri
        self.path = uri.split(b"?")[0]


def order_of(uri: bytes) -> sorting.Order:
    return TABLE.order(FakeRequest(uri))


def test_natural_order_reads_numbers_as_numbers():
    hosts = ["ftp10.example.org", "FTP2.example.org", "ftp1.example.org", "ftp.example.org",
             "de10", "de9", "de1a", "de01"]
    assert sorted(hosts, key=sorting.natural) == [
        "de01", "de1a", "de9", "de10", "ftp.example.org", "ftp1.example.org",
        "FTP2.example.org", "ftp10.example.org"]
    assert sorting.natural("de01") != sorting.natural("de1")          # a total order
    assert sorting.natural(None) == sorting.natural("")


def test_stable_and_rows_without_a_value_last_both_ways():
    rows = [Row("a", 1.0), Row("b", None), Row("c", 2.0), Row("d", 1.0), Row("e", None)]
    up = order_of(b"/t?sort=score&dir=asc").apply(rows)
    down = order_of(b"/t?sort=score&dir=desc").apply(rows)
    assert [r.name for r in up] == ["a", "d", "c", "b", "e"]      # ties keep their order
    assert [r.name for r in down] == ["c", "a", "d", "b", "e"]    # ... reversed too; None last


def test_unknown_keys_and_directions_are_the_default():
    for uri in (b"/t", b"/t?sort=nope", b"/t?sort=%ff&dir=sideways", b"/t?sort=score%00"):
        o = order_of(uri)
        assert (o.key, o.direction) == ("name", "asc"), uri
    o = order_of(b"/t?sort=score")                     # a column's first direction
    assert (o.key, o.direction) == ("score", "desc")


def test_links_toggle_the_current_column_and_keep_filters():
    o = order_of(b"/admin/?country=DE&status=active&sort=score&dir=desc&done=saved")
    assert o.aria("score") == "descending" and o.aria("name") == ""
    assert o.href("score") == "/admin/?country=DE&status=active&sort=score&dir=asc"
    assert o.href("name") == "/admin/?country=DE&status=active&sort=name&dir=asc"
    with pytest.raises(KeyError):
        o.href("nope")


def test_a_table_refuses_a_default_it_does_not_have():
    with pytest.raises(ValueError):
        sorting.Table((sorting.Column("a", str),), default="b")


def _names(body: str) -> list[str]:
    """The mirror names in the order the admin list shows them."""
    return re.findall(r'<a href="/admin/mirrors/\d+"><b>([^<]+)</b>', body)


def _th(body: str, label: str) -> str:
    """The header cell holding the sort link `label`."""
    for th in re.findall(r"<th\b[^>]*>.*?</th>", body, re.S):
        if f">{label}<" in th:
            return th
    raise AssertionError(f"no header {label}")


class AdminMirrorSortTests(AdminWebCase):
    def setUp(self):
        super().setUp()
        for i, (cc, host, score_weight) in enumerate((
                ("DE", "ftp10.example.de", 1), ("DE", "ftp2.example.de", 3),
                ("US", "ftp1.example.com", 2), ("FR", "ftp3.example.fr", 0.5))):
            m = add_mirror(self.engine, cc, host, ipv4=f"192.0.2.{20 + i}", weight=score_weight)
            with self.engine.begin() as conn:
                conn.execute(mirror_health.insert().values(
                    mirror_id=m.id, last_probe_at=T0, last_ok_at=T0, ipv4_up=True,
                    last_sync_at=T0 - _dt.timedelta(hours=i + 1)))
        self.login()

    def test_default_is_by_country_grouped(self):
        r, body = self.get("/admin/")
        assert r.code == 200
        assert _names(body) == ["de1", "de2", "fr1", "us1"]
        assert 'class="country-head"' in body
        assert 'aria-sort="ascending"' in _th(body, "Country")

    def test_host_names_sort_naturally_in_one_list(self):
        _r, body = self.get("/admin/?sort=host")
        hosts = re.findall(r'</b></a> <span class="muted small">([^<]+)</span>', body)
        assert hosts == ["ftp1.example.com", "ftp2.example.de", "ftp3.example.fr",
                         "ftp10.example.de"]
        assert 'class="country-head"' not in body            # one list, the country as a tag
        assert 'aria-sort="ascending"' in _th(body, "host")
        assert "aria-sort" not in _th(body, "Score")

    def test_score_first_click_highest_first_then_toggles(self):
        _r, body = self.get("/admin/")
        link = unescape(re.search(r'href="([^"]*sort=score[^"]*)"', body).group(1))
        assert link == "/admin/?sort=score&dir=desc"
        _r, body = self.get(link)
        assert _names(body) == ["de2", "us1", "de1", "fr1"]        # weights 3, 2, 1, 0.5
        th = _th(body, "Score")
        assert 'aria-sort="descending"' in th and "sort=score&amp;dir=asc" in th
        _r, body = self.get("/admin/?sort=score&dir=asc")
        assert _names(body) == ["fr1", "de1", "us1", "de2"]

    def test_sync_age_oldest_first_and_filters_kept(self):
        _r, body = self.get("/admin/?status=active&sort=sync")
        assert _names(body) == ["fr1", "us1", "de2", "de1"]        # 4 h, 3 h, 2 h, 1 h
        assert 'name="sort" value="sync"' in body                  # the filter form keeps it
        assert "status=active&amp;sort=name&amp;dir=asc" in _th(body, "Mirror")

    def test_nonsense_sort_is_the_default(self):
        r, body = self.get("/admin/?sort=%3Cscript%3E&dir=up")
        assert r.code == 200 and _names(body) == ["de1", "de2", "fr1", "us1"]
        assert "<script>" not in body


@pytest.fixture
def public_injected(request, sqlite_engine):
    request.cls.engine = sqlite_engine
    request.cls.geo = None


@pytest.mark.usefixtures("public_injected")
class TestPublicSort(Base):
    def setUp(self):
        with self.engine.begin() as conn:
            add(conn, "DE", "ftp10.example.de", provider_name="Zeta")
            add(conn, "DE", "ftp2.example.de", provider_name="alpha")
            add(conn, "AT", "ftp1.example.at")
            store.add_mirror(conn, actor="t", mail=None, country="FR", hostname="x.example.fr",
                             http_url="http://x.example.fr/", status="pending",
                             rules=Rules(allow_private=True))
        super().setUp()
        self.root = resource.Resource()
        public.mount(self.root, self.ctx)
        self.stub = StubTreq(self.root)

    def hosts(self, path):
        r, body = self.get(path)
        assert r.code == 200
        html = body.decode()
        table = html.split('class="public-mirrors"')[1].split("</table>")[0]
        return re.findall(r'<td class="small">([a-z0-9.]+\.example\.[a-z]+)</td>', table), table

    def test_by_country_by_default(self):
        hosts, table = self.hosts("/")                    # by country, then name: de1, de2
        assert hosts == ["ftp1.example.at", "ftp10.example.de", "ftp2.example.de"]
        assert 'id="c-at"' in table and "Austria" in table
        assert 'aria-sort="ascending"' in _th(table, "Country")

    def test_sorted_by_host_and_provider(self):
        hosts, table = self.hosts("/?sort=host&dir=desc")
        assert hosts == ["ftp10.example.de", "ftp2.example.de", "ftp1.example.at"]
        assert 'aria-sort="descending"' in _th(table, "Host")
        assert 'class="country-head"' not in table
        hosts, _ = self.hosts("/?sort=provider")          # without a provider: last
        assert hosts == ["ftp2.example.de", "ftp10.example.de", "ftp1.example.at"]
