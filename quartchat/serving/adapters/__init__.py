"""The servers' private names, one module per library (see quartchat/adapters/__init__.py);
their canaries are in tests/serving/test_canaries.py."""
