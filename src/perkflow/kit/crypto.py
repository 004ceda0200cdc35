"""Keys derived from the master secret; AES-GCM for PII at rest; keyed hashes; masking."""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE = 12


def derive_key(master: bytes, purpose: str, length: int = 32) -> bytes:
    """A key for one purpose, so one leaked derived key exposes nothing else."""
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=b"perkflow", info=purpose.encode()
    ).derive(master)


class FieldCipher:
    """Encrypts short values (phone numbers, card codes) with AES-GCM bound to a context."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str, context: bytes = b"") -> bytes:
        """Nonce followed by ciphertext and tag."""
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), context)

    def decrypt(self, blob: bytes, context: bytes = b"") -> str:
        """The plaintext; raises if the blob was tampered with or moved to another context."""
        return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], context).decode()


class KeyedHasher:
    """HMAC-SHA256 for lookups by a secret value without storing it."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def digest(self, value: str) -> str:
        """Hex digest of the value."""
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()


def sha256_hex(value: str) -> str:
    """Plain SHA-256 for high-entropy secrets such as API keys."""
    return hashlib.sha256(value.encode()).hexdigest()


def mask_phone(phone: str) -> str:
    """138****1234: the first three and last four digits stay visible."""
    if len(phone) < 8:
        return "*" * len(phone)
    return f"{phone[:3]}****{phone[-4:]}"


class Vault:
    """Every key perkflow derives from its master secret, one per purpose."""

    def __init__(self, master: bytes) -> None:
        self.pii = FieldCipher(derive_key(master, "pii-aes-gcm"))
        self.lookup = KeyedHasher(derive_key(master, "pii-lookup-hmac"))
        self.signing_key = derive_key(master, "session-signing").hex()
        self.link_key = derive_key(master, "h5-link-signing").hex()
        # Keys control-group hashes: cells are reproducible with it, guessable without it.
        self.assignment_key = derive_key(master, "audience-assignment").hex()
        # Signs outgoing webhook pushes when no shared secret is configured for the receiver.
        self.webhook_key = derive_key(master, "webhook-signing").hex()


# ---- signed HTTP bodies (partner callbacks, webhook pushes) -------------------------------------

SIGNATURE_TOLERANCE_S = 300


def sign_body(secret: str, body: bytes, *, timestamp: int) -> str:
    """`t=<unix>,v1=<HMAC-SHA256 of "t.body">`: the timestamp is signed, so a replay ages out."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def signature_problem(
    secret: str,
    body: bytes,
    header: str | None,
    *,
    now_ts: int,
    tolerance_s: int = SIGNATURE_TOLERANCE_S,
) -> str | None:
    """Why a signature header does not vouch for the body, or None when it does."""
    if not header:
        return "signature header missing"
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return "signature timestamp missing"
    if abs(now_ts - timestamp) > tolerance_s:
        return "signature timestamp too old or in the future"
    expected = sign_body(secret, body, timestamp=timestamp).split(",", 1)[1].removeprefix("v1=")
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        return "signature does not match"
    return None
