"""Subscriber master in the ledger: encrypted phone, keyed lookup hash, status with its events."""
