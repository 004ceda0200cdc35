"""The `perkflow` command line."""
