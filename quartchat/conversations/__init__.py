"""Conversations kept on the server: the data (store.py), what a turn does (turns.py)."""
