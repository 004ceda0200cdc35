"""The vendored browser files are the registry's, byte for byte, and a wrong download is refused."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import pytest

from perkflow.web import vendor


def _tarball(path: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(path)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_every_vendored_file_matches_its_manifest() -> None:
    assert vendor.check() == []
    names = {v.file for v in vendor.manifest()}
    assert names == {"htmx.min.js", "echarts.min.js", "jsQR.js"}


def test_a_changed_or_missing_file_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "vendor"
    shutil.copytree(vendor.folder(), root)
    (root / "htmx.min.js").write_bytes(b"// not htmx")
    (root / "jsQR.LICENSE").unlink()
    problems = vendor.check(root)
    assert any(p.startswith("htmx.min.js: SHA-256") for p in problems)
    assert any(p.startswith("jsQR.LICENSE: missing") for p in problems)


def test_the_download_is_refused_unless_its_hash_is_the_manifests() -> None:
    entry = next(v for v in vendor.manifest() if v.file == "htmx.min.js")
    real = (vendor.folder() / entry.file).read_bytes()
    assert vendor.extract(_tarball(entry.path, real), entry) == real
    with pytest.raises(ValueError, match="SHA-256"):
        vendor.extract(_tarball(entry.path, real + b"\n"), entry)
    with pytest.raises(KeyError):
        vendor.extract(_tarball("package/other.js", real), entry)
    assert hashlib.sha256(real).hexdigest() == entry.sha256


def test_tarball_addresses_follow_the_registry_layout() -> None:
    urls = {v.package: v.tarball_url for v in vendor.manifest()}
    assert urls["htmx.org"] == "https://registry.npmjs.org/htmx.org/-/htmx.org-2.0.11.tgz"
    assert urls["echarts"] == "https://registry.npmjs.org/echarts/-/echarts-5.6.0.tgz"
