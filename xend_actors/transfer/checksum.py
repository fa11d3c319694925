"""The checks a save file's header can name for its contents, and their running values.

A save file's checksum guards against a truncated or corrupt file, not a forged one
(restore is for the admin, of a file the admin names): CRC-32 (zlib's, as gzip and
PNG use) does that several times cheaper than SHA-256, which a 93 MB qemu state paid
for in the save's and the restore's time. SHA-256 stays readable: files of format
versions 1 and 2 carry it.

The same CRC-32 is computed with ISA-L's (``isal``), which folds the data with the
CPU's carry-less multiply: some 15 ms of CPU, its reads included, for a 93 MB qemu
state where zlib's took 35-40. A restore checks the state beside the qemu loading it,
and on a busy host that CPU is taken from qemu. zlib's is used where ``isal`` has no
build.
"""

from __future__ import annotations

import enum
import hashlib

try:
    from isal.isal_zlib import crc32
except ImportError:  # no build of it for this machine
    from zlib import crc32

SIZE = 32  # the header's field: a shorter value left-aligned, the rest zeros


class Check(enum.Enum):
    """An integrity check, by the name a version 3 header gives it."""

    SHA256 = "sha256"
    CRC32 = "crc32"

    @property
    def title(self) -> str:
        """The check's name in a message."""
        return {Check.SHA256: "SHA-256", Check.CRC32: "CRC-32"}[self]

    @classmethod
    def named(cls, raw: bytes) -> Check | None:
        """The check a header's NUL-padded name field gives; None for one not known."""
        try:
            return cls(raw.rstrip(b"\0").decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None


class Running:
    """A check's value over everything ``update`` was given; ISA-L, zlib and hashlib
    all let other threads run while they work through a large buffer."""

    def __init__(self, check: Check, data: bytes = b"") -> None:
        self.check = check
        self._sha = hashlib.sha256() if check is Check.SHA256 else None
        self._crc = 0
        self.update(data)

    def update(self, data: bytes | memoryview) -> None:
        if self._sha is not None:
            self._sha.update(data)
        else:
            self._crc = crc32(data, self._crc)

    def value(self) -> bytes:
        """The header's field: ``SIZE`` bytes."""
        raw = self._sha.digest() if self._sha is not None else self._crc.to_bytes(4, "big")
        return raw.ljust(SIZE, b"\0")
