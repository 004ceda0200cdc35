"""Campaigns: definitions, approval, waves, dispatch, responses and event triggers."""
