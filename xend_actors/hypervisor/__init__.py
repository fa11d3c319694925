"""Hypervisor drivers behind one narrow interface (base.py), sim and qemu, the Hypervisor
actor, and the ring vocabulary (ring/) the device controllers and backends speak."""
