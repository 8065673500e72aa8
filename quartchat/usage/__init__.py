"""Per-user limits on what reaches the upstream (and later the usage ledger and metrics)."""
