"""Pages rendered in zh_CN show no English: the console and H5 pages of a demo home, and errors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select
from sqlalchemy import text as sql
from typer.testing import CliRunner

from perkflow.cli.main import app as cli
from perkflow.db import make_engine, make_session_factory
from perkflow.main import create_app
from perkflow.org.rules import Role
from perkflow.settings import get_settings
from tests.factories import make_staff
from tests.web.helpers import csrf_of, sign_in

# Words that are the same in every language: the product, protocols, units, codes.
ALLOWED = {
    "perkflow",
    "h5",
    "sms",
    "smpp",
    "api",
    "id",
    "ids",
    "url",
    "csv",
    "json",
    "vip",
    "qr",
    "ci",
    "p",
    "z",
    "pt",
    "pp",
    "n",
    "k",
    "m",
    "kb",
    "mb",
    "gb",
    "tb",
    "ms",
    "s",
    "min",
    "h",
    "csrf",
    "ok",
    "qini",
    "auc",
    "uplift_pp",
    "e",
    "x",
    "utc",
    "http",
    "https",
    "mart",
    "sql",
    "duckdb",
    "sqlite",
    "postgresql",
    "ibis",
    "spark",
    "cn",
    "gd",
    "zj",
    "email",
    "e-mail",
    "app",
    "vs",
    "echarts",
    "htmx",
    "pdf",
    "ip",
    "otp",
    "ssl",
    "tls",
    "bss",
    "crm",
    "gmv",
    "arpu",
    "dou",
    "mou",
    "top",
    "roi",
    "kpi",
    "cvr",
    "ctr",
    "sku",
    "iqiyi",
    "qq",
    "tencent",
    "youku",
    "mgtv",
    "kfc",
    "didi",
    "meituan",
    "jd",
    "taobao",
    "alipay",
    "wechat",
    "bilibili",
    "english",  # the language switcher names each language in itself
    "webhook",  # a protocol's name, like API
    "wald",
    "wilson",
    "newcombe",
    "fisher",
    "holm",
    "bonferroni",
    "benjamini",
    "hochberg",  # methods' names
}
# Columns whose values are the operator's own names and codes (shown as entered, not translated).
# Message texts are what marketers wrote (a demo campaign's bilingual message), not the interface.
NAME_COLUMNS = {"name", "display_name", "code", "title", "name_en", "username", "variant", "key"}
NAME_COLUMNS |= {"body", "subject", "text", "content", "actor_name"}
# Attributes whose text a person reads or hears.
SPOKEN_ATTRS = ("placeholder", "title", "aria-label", "alt", "data-confirm", "data-copied")
VOID = {"input", "img", "br", "hr", "meta", "link", "source", "wbr"}
# Chart option keys whose strings are drawn on the chart.
CHART_TEXT_KEYS = {"name", "label", "categories", "title", "text", "xName", "yName", "legend"}
WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
# Addresses, e-mail, identifiers with _ . / @ or digits: codes, not words of the interface.
CODE_TOKEN = re.compile(r"\S*(?:[@_/]|://|\.\w|\w-\d|\d-\w)\S*|[a-z0-9]+(?:-[a-z0-9]+)+")


class _Visible(HTMLParser):
    """Text a reader sees or hears: text nodes, spoken attributes, chart labels; no code."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self._skip: list[str] = []
        self._json = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in SPOKEN_ATTRS:
            said = values.get(name) or ""
            # A placeholder that is one code-like token or several lines is a sample of input
            # (a code, an address, a YAML body), not words.
            sample = name == "placeholder" and ("\n" in said or CODE_TOKEN.fullmatch(said))
            if said and not sample:
                self.texts.append(said)
        if tag == "input" and values.get("type") in ("submit", "button") and values.get("value"):
            self.texts.append(str(values["value"]))
        classes = set((values.get("class") or "").split())
        if classes & {"secret", "code"} and tag not in VOID:
            # A code shown to be copied (card code, coupon code) is data, not words.
            self._skip.append(tag)
            return
        if tag in ("script", "style", "code", "kbd", "samp", "pre", "textarea", "option"):
            # Option texts are read (they are checked below) unless they are codes.
            if tag == "option":
                return
            self._skip.append(tag)
            self._json = tag == "script" and values.get("type") == "application/json"

    def handle_endtag(self, tag: str) -> None:
        if self._skip and self._skip[-1] == tag:
            self._skip.pop()
            self._json = False

    def handle_data(self, data: str) -> None:
        if self._json:
            try:
                self.texts.extend(_chart_texts(json.loads(data)))
            except ValueError:
                self.texts.append(data)
        elif not self._skip:
            self.texts.append(data)


def _chart_texts(value: Any, key: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _chart_texts(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _chart_texts(v, key)
    elif isinstance(value, str) and key in CHART_TEXT_KEYS:
        yield value


def english_words(html: str, data_words: frozenset[str] = frozenset()) -> set[str]:
    """English words a reader of the page would meet, beyond allowed names, codes and data."""
    parser = _Visible()
    parser.feed(html)
    found = set()
    known = ALLOWED | data_words
    for text in parser.texts:
        prose = " ".join(t for t in text.split() if not CODE_TOKEN.fullmatch(t) or t.isalpha())
        for word in WORD.findall(prose):
            low = word.lower().strip("'’-")
            if low in known or len(low) <= 1 or all(part in known for part in low.split("-")):
                continue
            if word.isupper() or re.fullmatch(r"[A-Z]{1,4}\d*", word):
                continue  # codes: GD, ZJ01, VIP, SMS
            found.add(word)
    return found


def test_the_scanner_finds_english_in_text_attributes_and_charts() -> None:
    html = (
        '<p>会员 Tier</p><input placeholder="Search"><code>budget_fen</code>'
        '<script type="application/json">{"kind": "bar", "series": [{"name": "Members"}]}</script>'
        "<script>var notShown = 1;</script><p>perkflow H5 GD01</p>"
    )
    assert english_words(html) == {"Tier", "Search", "Members"}


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("demo") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERKFLOW_HOME", str(home))
        mp.delenv("PERKFLOW_DATABASE_URL", raising=False)
        mp.delenv("PERKFLOW_SECRET_KEY", raising=False)
        result = CliRunner().invoke(
            cli, ["demo", "--subscribers", "3000", "--seed", "3", "--no-serve"]
        )
        assert result.exit_code == 0, result.output
        link = re.search(r"/h5/enter\?t=\S+", result.output)
        assert link, result.output
        engine = make_engine(f"sqlite:///{home / 'ledger.sqlite3'}")
        with make_session_factory(engine)() as s:
            make_staff(s, username="t.admin", role=Role.HQ_ADMIN, region="CN")
            make_staff(s, username="t.gd", role=Role.PROVINCE_MARKETER, region="GD")
        engine.dispose()
        yield {"home": str(home), "h5": link.group(0)}


@pytest.fixture(scope="module")
def demo_app(demo_home: dict[str, str]) -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERKFLOW_HOME", demo_home["home"])
        mp.delenv("PERKFLOW_DATABASE_URL", raising=False)
        mp.delenv("PERKFLOW_SECRET_KEY", raising=False)
        yield create_app(get_settings())


def _client(app: Any) -> TestClient:
    c = TestClient(app, base_url="http://127.0.0.1")
    c.cookies.set("perkflow_lang", "zh_CN")
    return c


def _plain_console_pages(app: Any) -> list[str]:
    paths = set()
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        if "GET" in (route.methods or set()) and path.startswith("/console") and "{" not in path:
            paths.add(path)
    return sorted(paths)


def _first_id(session: Any, model: Any) -> int:
    value = session.scalar(select(model.id).order_by(model.id).limit(1))
    assert value is not None, f"the demo home has no {model.__name__}"
    return int(value)


def _id_pages(home: str) -> list[str]:
    from perkflow.audience.models import Segment
    from perkflow.campaigns.models import Campaign
    from perkflow.catalog.models import Benefit, Partner
    from perkflow.coupons.models import CouponBatch
    from perkflow.envelopes.models import EnvelopeProgram

    engine = make_engine(f"sqlite:///{Path(home) / 'ledger.sqlite3'}")
    with make_session_factory(engine)() as s:
        campaign = _first_id(s, Campaign)
        batch = _first_id(s, CouponBatch)
        lottery = _first_id(s, EnvelopeProgram)
        benefit = _first_id(s, Benefit)
        partner = _first_id(s, Partner)
        segment = _first_id(s, Segment)
    engine.dispose()
    return [
        "/console/regions/GD",
        f"/console/campaigns/{campaign}",
        f"/console/campaigns/{campaign}/evaluation",
        f"/console/campaigns/{campaign}/monitor",
        f"/console/coupons/{batch}",
        f"/console/coupons/{batch}/edit",
        f"/console/envelopes/{lottery}",
        f"/console/benefits/{benefit}",
        f"/console/partners/{partner}",
        f"/console/segments/{segment}",
    ]


def _data_words(home: str) -> frozenset[str]:
    """Words of the names and codes the demo operator entered (partners, benefits, campaigns…)."""
    engine = make_engine(f"sqlite:///{Path(home) / 'ledger.sqlite3'}")
    words: set[str] = set()
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            for column in inspect(engine).get_columns(table):
                name = column["name"]
                if name in NAME_COLUMNS or name.endswith(("_name", "_code")):
                    rows = conn.execute(sql(f'SELECT DISTINCT "{name}" FROM "{table}"'))
                    for (value,) in rows:
                        if isinstance(value, str):
                            words.update(w.lower().strip("'’-") for w in WORD.findall(value))
    engine.dispose()
    return frozenset(words)


def _where(html: str, words: set[str]) -> list[str]:
    """The texts the words were found in, shortened, so a failure shows where to look."""
    parser = _Visible()
    parser.feed(html)
    found = []
    for text in parser.texts:
        if any(re.search(rf"\b{re.escape(w)}\b", text) for w in words):
            found.append(" ".join(text.split())[:80])
    return found[:5]


def _scan(client: TestClient, paths: list[str], data: frozenset[str]) -> dict[str, list[str]]:
    leaks: dict[str, list[str]] = {}
    for path in paths:
        r = client.get(path)
        if r.status_code != 200 or "text/html" not in r.headers.get("content-type", ""):
            if r.status_code >= 500:
                leaks[path] = [f"HTTP {r.status_code}"]
            continue
        words = english_words(r.text, data)
        if words:
            leaks[path] = sorted(words) + [f"in «{t}»" for t in _where(r.text, words)]
    return leaks


@pytest.mark.parametrize("username", ["t.admin", "t.gd"])
def test_console_pages_in_zh_cn_show_no_english(
    demo_app: Any, demo_home: dict[str, str], username: str
) -> None:
    with _client(demo_app) as client:
        sign_in(client, username)
        paths = _plain_console_pages(demo_app) + _id_pages(demo_home["home"])
        assert len(paths) > 20
        leaks = _scan(client, paths, _data_words(demo_home["home"]))
    assert not leaks, "English on zh_CN pages:\n" + "\n".join(
        f"  {p}: {' '.join(w)}" for p, w in sorted(leaks.items())
    )


def test_h5_pages_in_zh_cn_show_no_english(demo_app: Any, demo_home: dict[str, str]) -> None:
    with _client(demo_app) as client:
        r = client.get(demo_home["h5"], follow_redirects=True)
        assert r.status_code == 200
        paths = ["/h5", "/h5/benefits", "/h5/coupons", "/h5/wallet", "/h5/envelopes", "/h5/member"]
        paths.append("/h5/inbox")
        leaks = _scan(client, paths, _data_words(demo_home["home"]))
    assert not leaks, "English on zh_CN H5 pages:\n" + "\n".join(
        f"  {p}: {' '.join(w)}" for p, w in sorted(leaks.items())
    )


def test_a_refused_form_and_a_forbidden_page_are_chinese(demo_app: Any) -> None:
    with _client(demo_app) as client:
        sign_in(client, "t.gd")
        forbidden = client.get("/console/audit")
        invalid = client.get("/console/audit", params={"page": "many"})
    assert forbidden.status_code == 403, forbidden.text
    assert invalid.status_code == 422, invalid.text
    for page in (forbidden, invalid):
        assert not english_words(page.text), english_words(page.text)
        assert re.search(r"[\u4e00-\u9fff]", page.text)


def test_english_pages_name_offers_in_english(demo_app: Any) -> None:
    """The wizard's offers are named in the reader's language, not in both."""
    with TestClient(demo_app, base_url="http://127.0.0.1") as client:
        client.cookies.set("perkflow_lang", "en")
        sign_in(client, "t.admin")
        html = client.get("/console/campaigns/new").text
    select = re.search(r'<select name="offer".*?</select>', html, re.S)
    assert select, "the wizard has no offer list"
    labels = re.findall(r"<option [^>]*>([^<]*)</option>", select.group(0))
    assert len(labels) > 3
    assert not [x for x in labels if re.search(r"[\u4e00-\u9fff]", x)], labels


def test_a_refused_coupon_form_says_its_problem_in_chinese(
    demo_app: Any, demo_home: dict[str, str]
) -> None:
    """A form the batch's rules refuse (pydantic) answers in the reader's language."""
    with _client(demo_app) as client:
        sign_in(client, "t.admin")
        token = csrf_of(client.get("/console/coupons/new").text)
        r = client.post(
            "/console/coupons/new",
            data={"csrf_token": token, "code": "x" * 200, "name_zh": "测试券", "name_en": "Test"},
        )
    assert r.status_code == 422, r.text
    # The refused field is named as it is sent (code); the rest is Chinese.
    known = _data_words(demo_home["home"]) | {"test", "code"}
    assert not english_words(r.text, known), _where(r.text, english_words(r.text, known))
    assert re.search(r"code\S*：", r.text), "the refused field is named"
