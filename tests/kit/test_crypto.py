from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from perkflow.kit.crypto import FieldCipher, KeyedHasher, Vault, derive_key, mask_phone


def test_mask_phone_keeps_first_three_and_last_four() -> None:
    assert mask_phone("13812341234") == "138****1234"
    assert mask_phone("123") == "***"


def test_field_cipher_round_trips_and_never_stores_the_clear_value() -> None:
    cipher = FieldCipher(derive_key(b"master", "pii"))
    blob = cipher.encrypt("13812345678", b"subscriber:1")
    assert b"13812345678" not in blob
    assert cipher.decrypt(blob, b"subscriber:1") == "13812345678"
    # The same value twice encrypts differently (random nonce): equal phones are not visible.
    assert cipher.encrypt("13812345678", b"subscriber:1") != blob


def test_ciphertext_moved_to_another_row_does_not_decrypt() -> None:
    cipher = FieldCipher(derive_key(b"master", "pii"))
    blob = cipher.encrypt("13812345678", b"subscriber:1")
    with pytest.raises(InvalidTag):
        cipher.decrypt(blob, b"subscriber:2")


def test_keyed_hash_depends_on_the_key() -> None:
    a = KeyedHasher(derive_key(b"one", "lookup")).digest("13812345678")
    b = KeyedHasher(derive_key(b"two", "lookup")).digest("13812345678")
    assert a != b and len(a) == 64


def test_vault_derives_distinct_keys_per_purpose() -> None:
    vault = Vault(b"master-secret")
    assert vault.signing_key != vault.link_key
