"""The qemu fixtures (the test guest, xends with the qemu driver) for every e2e module."""

from tests.e2e.test_qemu_lifecycle import guest, qemu_xend

__all__ = ["guest", "qemu_xend"]
