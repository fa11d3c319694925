"""Hypervisor drivers behind one narrow interface (base.py): sim and qemu."""
