"""Membership: plan-based tiers, their benefit bundles, and the points ledger."""
