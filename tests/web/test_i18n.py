"""Every string on screen has a Chinese translation."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "src/perkflow/locale/zh_CN/LC_MESSAGES/messages.po"


def _extracted() -> set[str]:
    method_map = [
        ("src/perkflow/web/terms.py", "python"),
        ("src/perkflow/web/templates/**.html", "jinja2"),
    ]
    found = set()
    for _file, _line, message, _comments, _ctx in extract_from_dir(
        str(ROOT), method_map=method_map, keywords={"_": None, "N_": None}
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_zh_cn_catalog_translates_every_message() -> None:
    with PO.open("rb") as fh:
        catalog = read_po(fh, locale="zh_CN")
    translated = {m.id for m in catalog if m.id and m.string}
    missing = sorted(_extracted() - translated)
    assert not missing, f"untranslated (run `make i18n` and fill in): {missing}"
    assert len(translated) > 50
