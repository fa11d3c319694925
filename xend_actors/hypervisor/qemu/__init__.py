"""The qemu driver: a domain is one qemu-system-x86_64 process driven over QMP."""
