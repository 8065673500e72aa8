"""The peers `relay_bench.py --peers` measures quartchat against: naive relays of the same two
routes, written the way a tutorial would, with nothing quartchat adds (no accounts, guards, gate,
access log, validation beyond parsing, or saved replies). Not part of the service."""
