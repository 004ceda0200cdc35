"""Red envelopes: lottery programmes, share-to-unlock envelopes, their prize credits."""
