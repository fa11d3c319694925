"""Hypervisor drivers behind one narrow interface (base.py), sim and qemu, and what both use
(checks, rpc, detached); the Hypervisor actor; the ring vocabulary (ring/) devices speak."""
