"""Audience: segments, target lists, control groups, contact policy, self-service extraction."""
