"""Coupons: batches, flash-sale claims, codes, redemption, binding."""
