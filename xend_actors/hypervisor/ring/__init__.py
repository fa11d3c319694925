"""The control-message vocabulary of Xen's rings (facts §9): values and their 64-byte
frames, shared by the device controllers above and the drivers' backends."""
