"""Every string on screen has a Chinese translation, in its context, translated where shown."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from perkflow.web.i18n import (
    Msg,
    l_,
    localize,
    lp_,
    translate_text,
    translations,
    validation_message,
    validation_problem,
)

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "src/perkflow/locale/zh_CN/LC_MESSAGES/messages.po"
# The same places and markers as babel.cfg and the Makefile's i18n target.
METHOD_MAP = [
    ("src/perkflow/**.py", "python"),
    ("src/perkflow/web/templates/**.html", "jinja2"),
]
KEYWORDS = {
    "_": None,
    "N_": None,
    "l_": None,
    "lp_": ((1, "c"), 2),
    "gettext": None,
    "ngettext": (1, 2),
    "pgettext": ((1, "c"), 2),
    "npgettext": ((1, "c"), 2, 3),
}


def _extracted() -> set[tuple[str | None, str]]:
    found = set()
    for _file, _line, message, _comments, context in extract_from_dir(
        str(ROOT / "src/.."), method_map=METHOD_MAP, keywords=KEYWORDS
    ):
        found.add((context, message if isinstance(message, str) else message[0]))
    return found


def _catalog() -> dict[tuple[str | None, str], str]:
    with PO.open("rb") as fh:
        catalog = read_po(fh, locale="zh_CN")
    out = {}
    for m in catalog:
        if m.id:
            msgid = m.id if isinstance(m.id, str) else m.id[0]
            string = m.string if isinstance(m.string, str) else m.string[0]
            if string:
                out[(m.context, msgid)] = string
    return out


def test_zh_cn_catalog_translates_every_message_in_its_context() -> None:
    extracted = _extracted()
    # Python-marked messages and contexts are part of what is extracted.
    assert (None, "this field is required") in extracted
    assert ("lottery", "Tier") in extracted and ("membership", "Tier") in extracted
    assert (None, "pick an offer from the list") in extracted
    translated = _catalog()
    missing = sorted(extracted - set(translated), key=str)
    assert not missing, f"untranslated (run `make i18n` and fill in): {missing}"
    assert len(translated) > 50


def test_ambiguous_words_are_translated_by_their_context() -> None:
    zh = translations("zh_CN")
    assert zh.pgettext("membership", "Tier") == "会员等级"
    assert zh.pgettext("lottery", "Tier") == "奖项等级"
    assert zh.pgettext("origin", "Source") == "来源"
    assert zh.pgettext("coupon", "Value") == "面值"
    assert zh.gettext("Value") == "值"
    assert zh.gettext("Channel") == "渠道"


def test_marked_messages_are_translated_when_shown() -> None:
    zh, en = translations("zh_CN"), translations("en")
    label = l_("pick an offer from the list")
    assert label == "pick an offer from the list"  # still the English text as a str
    chart = {"series": [{"name": lp_("lottery", "Tier")}], "problems": [{"message": label}]}
    assert localize(chart, zh) == {
        "series": [{"name": "奖项等级"}],
        "problems": [{"message": "请从列表中选择一个优惠"}],
    }
    assert localize(chart, en)["series"][0]["name"] == "Tier"
    refused = l_("a {status} campaign has nothing to dispatch", status="draft")
    assert isinstance(refused, Msg) and str(refused) == "a draft campaign has nothing to dispatch"
    assert localize(refused, zh) == "状态为 draft 的营销活动没有可发送的内容"


def test_domain_messages_with_values_are_translated_by_pattern() -> None:
    zh = translations("zh_CN")
    assert translate_text("your role may not do this (audit.read)", zh) == (
        "您的角色无权执行此操作（audit.read）"
    )
    assert translate_text("no campaign 42", zh) == "营销活动 42 不存在"
    assert translate_text("something nobody catalogued", zh) is None
    assert translate_text("no campaign 42", translations("en")) == "no campaign 42"


def test_validation_problems_are_said_in_the_readers_language() -> None:
    zh = translations("zh_CN")
    assert validation_message({"type": "missing"}, zh) == "此项必填"
    assert validation_message({"type": "greater_than_equal", "ctx": {"ge": 1}}, zh) == (
        "请输入不小于 1 的值"
    )
    assert validation_message({"type": "unheard_of"}, zh) == "值无效"
    en = translations("en")
    assert validation_message({"type": "int_parsing"}, en) == "enter a whole number"


def test_catalogued_domain_messages_are_still_raised_somewhere() -> None:
    """web/terms.py lists domain errors by their text: each must still be in the source."""
    from perkflow.web.terms import DOMAIN_MESSAGES, MESSAGE_PATTERNS

    source = "\n".join(
        p.read_text(encoding="utf-8")
        for p in (ROOT / "src/perkflow").rglob("*.py")
        if p.name != "terms.py"
    )
    stale = [m for m in DOMAIN_MESSAGES if f'"{m}"' not in source]
    # A pattern's fixed parts stand in an f-string, its values in braces.
    fixed = [re.split(r"\{\w+\}", m) for m in MESSAGE_PATTERNS]
    stale += [
        m
        for m, parts in zip(MESSAGE_PATTERNS, fixed, strict=True)
        if not all(part in source for part in parts)
    ]
    assert not stale, f"no longer raised; drop them from web/terms.py: {stale}"


def test_a_catalogued_domain_error_is_shown_in_chinese() -> None:
    zh = translations("zh_CN")
    assert (
        translate_text("this campaign belongs to another province", zh) == "该营销活动属于其他省份"
    )


def test_a_named_field_with_a_pydantic_problem_is_translated() -> None:
    zh = translations("zh_CN")
    problem = validation_problem({"type": "string_too_long", "ctx": {"max_length": 48}})
    assert str(problem) == "enter at most 48 characters"
    assert localize(problem, zh) == "最多输入 48 个字符"
    # Pages join the field and the problem into one text; the field stays as it is sent.
    assert translate_text(f"code: {problem}", zh) == "code：最多输入 48 个字符"
