"""From upstream bytes to client events: parse, fold, relay, encode."""
