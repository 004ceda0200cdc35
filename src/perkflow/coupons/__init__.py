"""Coupons and red envelopes: batches, flash-sale claims, redemption, lotteries, sharing."""
