"""Consoles: each domain's console channel relayed to one client at a time, reached
through the API's WebSocket (and a TCP port per domain with ``(console-tcp yes)``)."""
