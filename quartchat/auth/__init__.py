"""Accounts: who is asking (principal.py), and the records behind it, one module per noun."""
