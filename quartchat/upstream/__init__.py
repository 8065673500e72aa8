"""The OpenAI-compatible upstream: its HTTP client and transport."""
