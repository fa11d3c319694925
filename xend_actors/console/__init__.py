"""Consoles: a TCP port per domain relayed to its console channel."""
