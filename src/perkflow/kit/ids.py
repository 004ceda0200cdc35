"""Random tokens and identifiers."""

from __future__ import annotations

import secrets


def token(nbytes: int = 24) -> str:
    """A URL-safe random token."""
    return secrets.token_urlsafe(nbytes)


def prefixed_key(prefix: str, nbytes: int = 32) -> str:
    """A secret such as an API key: `pk_live_...`, its prefix readable in logs."""
    return f"{prefix}_{secrets.token_urlsafe(nbytes)}"
