"""Channels: one adapter interface; SMS over SMPP, e-mail over SMTP, webhook push, in-app inbox."""
