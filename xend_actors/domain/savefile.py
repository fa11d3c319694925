"""The save image: one file holding a saved domain's info SXP and its hypervisor state.

The layout, all integers big-endian::

    magic       16 bytes  b"xend-actors-save"
    version     u32       FORMAT_VERSION
    info size   u32       bytes of the domain info SXP text
    payload     u64       bytes of the hypervisor's state
    checksum    32 bytes  SHA-256 of the info text followed by the payload
    info        the domain info SXP (facts §4.5), its ``(config (vm ...))`` inside
    payload     the driver's state of the suspended domain (opaque to xend)

The file must be exactly that long. Only the header/vmconfig framing idea of Xen's
format carries over (facts §10.5): a payload is only good for the driver that made it.
Reading checks everything before anything is created, so a truncated, corrupt or
foreign file is refused with a ``BadRequest`` that says which.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from xend_actors import sxp
from xend_actors.errors import BadRequest, XendError
from xend_actors.store import atomic_write

MAGIC = b"xend-actors-save"
FORMAT_VERSION = 1
HEADER = struct.Struct(">16sIIQ32s")
MAX_INFO = 1 << 20
MAX_PAYLOAD = 256 << 20


@dataclass(frozen=True)
class SaveImage:
    """What a save file holds: the domain info SXP and the hypervisor's state."""

    info: sxp.Value
    payload: bytes


def encode(image: SaveImage) -> bytes:
    """The bytes of a save file holding ``image``."""
    info = sxp.show(image.info).encode()
    if len(info) > MAX_INFO:
        raise BadRequest(f"the domain info is {len(info)} bytes; a save file holds "
                         f"at most {MAX_INFO}")
    if len(image.payload) > MAX_PAYLOAD:
        raise BadRequest(f"the domain state is {len(image.payload)} bytes; a save file "
                         f"holds at most {MAX_PAYLOAD}")
    digest = hashlib.sha256(info + image.payload).digest()
    header = HEADER.pack(MAGIC, FORMAT_VERSION, len(info), len(image.payload), digest)
    return header + info + image.payload


def decode(data: bytes, name: str = "the save file") -> SaveImage:
    """The image in ``data``; BadRequest naming ``name`` if it is not a whole, good one."""
    if len(data) < HEADER.size or not data.startswith(MAGIC):
        if MAGIC.startswith(data[:len(MAGIC)]) and len(data) < HEADER.size:
            raise BadRequest(f"{name} is truncated: {len(data)} bytes, less than a header")
        raise BadRequest(f"{name} is not a xend-actors save file (bad magic)")
    _magic, version, info_size, payload_size, digest = HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise BadRequest(f"{name} has save format version {version}; this xend reads "
                         f"version {FORMAT_VERSION}")
    if info_size > MAX_INFO or payload_size > MAX_PAYLOAD:
        raise BadRequest(f"{name} claims sizes beyond the limits ({info_size} bytes of "
                         f"info, {payload_size} of state)")
    expected = HEADER.size + info_size + payload_size
    if len(data) < expected:
        raise BadRequest(f"{name} is truncated: {len(data)} bytes of {expected}")
    if len(data) > expected:
        raise BadRequest(f"{name} has {len(data) - expected} bytes of trailing garbage")
    body = data[HEADER.size:]
    if hashlib.sha256(body).digest() != digest:
        raise BadRequest(f"{name} is corrupt: its SHA-256 checksum does not match")
    try:
        info = sxp.parse(body[:info_size], max_size=info_size)
    except (sxp.ParseError, UnicodeDecodeError) as error:
        raise BadRequest(f"{name} holds domain info that does not parse: {error}") from None
    if sxp.name(info) != "domain":
        raise BadRequest(f"{name} holds no (domain ...) info")
    return SaveImage(info, body[info_size:])


def check_target(path: Path) -> None:
    """Refuse a path a save file cannot be written to, before anything is touched."""
    if not path.is_absolute():
        raise BadRequest(f"the save file must be an absolute path, got {path}")
    if not path.parent.is_dir():
        raise BadRequest(f"cannot save to {path}: {path.parent} is not a directory")
    if path.is_dir():
        raise BadRequest(f"cannot save to {path}: it is a directory")


def write(path: Path, image: SaveImage) -> None:
    """Write ``image`` to ``path`` atomically: complete and fsynced, or not there at all."""
    check_target(path)
    try:
        atomic_write(path, encode(image))
    except OSError as error:
        raise XendError(f"cannot write {path}: {error.strerror or error}") from None


def read(path: Path) -> SaveImage:
    """The image in the file at ``path``; BadRequest if unreadable or not a good one."""
    if not path.is_absolute():
        raise BadRequest(f"the save file must be an absolute path, got {path}")
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > HEADER.size + MAX_INFO + MAX_PAYLOAD:
                raise BadRequest(f"{path} is too large to be a save file ({size} bytes)")
            data = file.read()
    except OSError as error:
        raise BadRequest(f"cannot read {path}: {error.strerror or error}") from None
    return decode(data, str(path))
