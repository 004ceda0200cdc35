"""Domain-free helpers: money, clock, ids, crypto, pagination."""
