"""The debug port (facts §11.3): its line protocol (requests.py, no I/O) and the server
that owns the listener and its clients (server.py)."""
