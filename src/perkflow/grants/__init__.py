"""Grants: one benefit given to one subscriber, fulfilled exactly once through one path."""
