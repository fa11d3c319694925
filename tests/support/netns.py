"""Network namespaces the tests make: whether they can be made here, and a sim guest's
shell reached from inside one."""

from __future__ import annotations

import os
import shutil
import subprocess

# --- network namespaces ----------------------------------------------------------------------


def netns_usable() -> str | None:
    """Why network namespaces can't be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns is unavailable: {probe.stderr.strip()}"
    return None


# A command typed on a sim guest's console, as a script to run inside a test's network
# namespace (``python -c SIM_SHELL PORT COMMAND``); it prints what the command answered.
SIM_SHELL = r"""
import socket, sys, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
sock.sendall(sys.argv[2].encode() + b"\r")
seen, deadline = b"", time.monotonic() + 10
marker = sys.argv[2].encode() + b"\r\n"
while not (marker in seen and seen.rsplit(marker, 1)[1].endswith(b"# ")):
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    seen += sock.recv(4096)
print(seen.rsplit(marker, 1)[1][:-2].decode().strip())
"""

