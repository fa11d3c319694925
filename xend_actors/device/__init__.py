"""Devices: control messages and the block and network controllers."""
