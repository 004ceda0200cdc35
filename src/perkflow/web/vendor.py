"""The vendored browser files: checked against their manifest, fetched from the npm registry.

`python -m perkflow.web.vendor check` verifies every file's SHA-256 (offline);
`python -m perkflow.web.vendor fetch` (`make vendor`) downloads each package's tarball from
the registry, takes the one file, and writes it only if its hash is the manifest's.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Vendored:
    """One file as the manifest names it."""

    file: str
    package: str
    version: str
    path: str
    sha256: str
    license_file: str

    @property
    def tarball_url(self) -> str:
        # Scoped names (@scope/name) keep the scope in the path and drop it from the file name.
        bare = self.package.rsplit("/", 1)[-1]
        return f"{REGISTRY}/{self.package}/-/{bare}-{self.version}.tgz"


def folder() -> Path:
    """Where the vendored files live in the package."""
    return Path(str(resources.files("perkflow").joinpath("web/static/vendor")))


def manifest(root: Path | None = None) -> list[Vendored]:
    """The manifest's entries."""
    raw = json.loads(((root or folder()) / "manifest.json").read_text(encoding="utf-8"))
    return [
        Vendored(
            file=f["file"],
            package=f["package"],
            version=f["version"],
            path=f["path"],
            sha256=f["sha256"],
            license_file=f["license_file"],
        )
        for f in raw["files"]
    ]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check(root: Path | None = None) -> list[str]:
    """What does not match the manifest (an empty list when everything does)."""
    root = root or folder()
    problems = []
    for v in manifest(root):
        target = root / v.file
        if not target.is_file():
            problems.append(f"{v.file}: missing")
        elif _digest(target.read_bytes()) != v.sha256:
            problems.append(f"{v.file}: SHA-256 is not the manifest's ({v.package} {v.version})")
        if not (root / v.license_file).is_file():
            problems.append(f"{v.license_file}: missing (the licence of {v.package})")
    return problems


def extract(tarball: bytes, v: Vendored) -> bytes:
    """The manifest's file out of a package tarball, refused unless its hash matches."""
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.extractfile(v.path)
        if member is None:
            raise ValueError(f"{v.package} {v.version}: no file {v.path} in the tarball")
        data = member.read()
    if _digest(data) != v.sha256:
        raise ValueError(f"{v.package} {v.version}: {v.path} does not have the manifest's SHA-256")
    return data


def fetch(root: Path | None = None, *, timeout_s: float = 60.0) -> list[str]:
    """Download every file from the registry and write it; the names written."""
    root = root or folder()
    written = []
    for v in manifest(root):
        with urllib.request.urlopen(v.tarball_url, timeout=timeout_s) as reply:  # noqa: S310  (https, fixed host)
            data = extract(reply.read(), v)
        (root / v.file).write_bytes(data)
        written.append(f"{v.file} ({v.package} {v.version})")
    return written


def main(argv: list[str]) -> int:
    """`check` or `fetch`; the exit status."""
    command = argv[0] if argv else "check"
    if command == "fetch":
        for line in fetch():
            print(f"fetched {line}")
        return 0
    if command == "check":
        problems = check()
        for line in problems:
            print(line, file=sys.stderr)
        if not problems:
            print(f"{len(manifest())} vendored files match the manifest")
        return 1 if problems else 0
    print("usage: python -m perkflow.web.vendor [check|fetch]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
