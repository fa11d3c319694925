"""The save image format: what is written reads back, and every bad file is refused."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path

import pytest

from xend_actors import sxp
from xend_actors.errors import BadRequest, Conflict
from xend_actors.transfer import savefile
from xend_actors.transfer.savefile import HEADER, HEADER_V1, HEADER_V2, MAGIC, SaveImage

INFO = ["domain", ["id", "5"], ["name", "web"],
        ["config", ["vm", ["name", "web"], ["memory", "32"]]]]
IMAGE = SaveImage(INFO, b"\x00state\xff" * 100)
CHECK_AT, DIGEST_AT = 16 + 4 + 12, HEADER.size - 32  # version 3: the check's name, its value


def test_an_image_reads_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "web.save"
    savefile.write(path, IMAGE)
    assert savefile.read(path) == IMAGE
    assert path.read_bytes().startswith(MAGIC)
    assert [p.name for p in tmp_path.iterdir()] == ["web.save"]  # no temp file left


def test_the_header_holds_version_sizes_and_a_named_crc32() -> None:
    data = savefile.encode(IMAGE)
    magic, version, driver, check, info_size, meta_size, payload_size, digest = \
        HEADER.unpack_from(data)
    assert (magic, version, payload_size) == (MAGIC, 3, 700)
    assert (driver.rstrip(b"\0"), check.rstrip(b"\0"), meta_size) == (b"sim", b"crc32", 0)
    assert len(data) == HEADER.size + info_size + payload_size
    assert digest == zlib.crc32(data[HEADER.size:]).to_bytes(4, "big") + bytes(28)


def _older(version: int, image: SaveImage) -> bytes:
    """A file as a xend of save format ``version`` (1 or 2, SHA-256) wrote it."""
    info = sxp.show(image.info).encode()
    body = info + image.meta + image.payload
    digest = hashlib.sha256(body).digest()
    if version == 1:
        return HEADER_V1.pack(MAGIC, 1, len(info), len(image.payload), digest) + body
    return HEADER_V2.pack(MAGIC, 2, image.driver.encode(), len(info), len(image.meta),
                          len(image.payload), digest) + body


@pytest.mark.parametrize("version", [1, 2])
def test_older_sha256_files_are_still_read_and_checked(tmp_path: Path, version: int) -> None:
    image = SaveImage(INFO, IMAGE.payload, "sim", b"" if version == 1 else b"(machine)")
    data = _older(version, image)
    assert savefile.decode(data, driver="sim") == image
    path = tmp_path / "old.save"
    path.write_bytes(data)
    assert savefile.read(path, "sim") == image
    header = read_streamed(path)  # the streamed restore's way
    assert (header.version, header.check.value) == (version, "sha256")
    for cut in ((HEADER_V1 if version == 1 else HEADER_V2).size - 1, len(data) - 1):
        with pytest.raises(BadRequest, match="truncated"):
            savefile.decode(data[:cut])
    bad = bytearray(data)
    bad[-1] ^= 0x01
    with pytest.raises(BadRequest, match="corrupt: its SHA-256 checksum does not match"):
        savefile.decode(bytes(bad))
    path.write_bytes(bad)
    with pytest.raises(BadRequest, match="corrupt: its SHA-256 checksum does not match"):
        read_streamed(path)


def test_a_version_3_file_may_name_sha256_but_no_unknown_check() -> None:
    data = bytearray(savefile.encode(IMAGE))
    data[CHECK_AT:CHECK_AT + 8] = b"sha256\0\0"
    data[DIGEST_AT:HEADER.size] = hashlib.sha256(data[HEADER.size:]).digest()
    assert savefile.decode(bytes(data)) == IMAGE
    data[CHECK_AT:CHECK_AT + 8] = b"md5\0\0\0\0\0"
    with pytest.raises(BadRequest, match="names a checksum this xend does not know: 'md5'"):
        savefile.decode(bytes(data))


def test_a_streamed_file_is_checked_as_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "web.save"
    savefile.write(path, IMAGE)
    assert read_streamed(path).check.value == "crc32"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x80
    path.write_bytes(data)
    with pytest.raises(BadRequest, match="corrupt: its CRC-32 checksum does not match"):
        read_streamed(path)


@pytest.mark.parametrize("cut", [0, 10, HEADER.size - 1, HEADER.size, HEADER.size + 50, -1])
def test_a_truncated_file_is_refused(cut: int) -> None:
    data = savefile.encode(IMAGE)[:cut] if cut >= 0 else savefile.encode(IMAGE)[:-1]
    with pytest.raises(BadRequest, match=r"truncated|bad magic") as raised:
        savefile.decode(data)
    if cut > 0:
        assert "truncated" in raised.value.message


def test_a_corrupt_byte_after_the_header_or_in_its_checksum_is_caught() -> None:
    data = bytearray(savefile.encode(IMAGE))
    for at in (HEADER.size + 3, len(data) - 1, DIGEST_AT + 3, DIGEST_AT + 31):
        bad = bytearray(data)
        bad[at] ^= 0x40
        with pytest.raises(BadRequest, match="corrupt: its CRC-32 checksum"):
            savefile.decode(bytes(bad))


def test_a_foreign_file_a_newer_version_and_trailing_bytes_are_refused() -> None:
    data = savefile.encode(IMAGE)
    with pytest.raises(BadRequest, match="not a xend-actors save file"):
        savefile.decode(b"LinuxGuestRecord" + data[16:])
    with pytest.raises(BadRequest, match="version 9"):
        savefile.decode(MAGIC + struct.pack(">I", 9) + data[20:])
    with pytest.raises(BadRequest, match="trailing garbage"):
        savefile.decode(data + b"x")


def test_sizes_beyond_the_limits_are_refused_before_reading_on() -> None:
    header = HEADER.pack(MAGIC, savefile.FORMAT_VERSION, b"sim", b"crc32",
                         savefile.MAX_INFO + 1, 0, 0, b"\0" * 32)
    with pytest.raises(BadRequest, match="beyond the limits"):
        savefile.decode(header)


def test_info_that_is_not_a_domain_is_refused() -> None:
    with pytest.raises(BadRequest, match=r"no \(domain \.\.\.\) info"):
        savefile.decode(savefile.encode(SaveImage(["vm", ["name", "x"]], b"")))


def test_bad_targets_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="absolute path"):
        savefile.write(Path("relative.save"), IMAGE)
    with pytest.raises(BadRequest, match="is not a directory"):
        savefile.write(tmp_path / "missing" / "x.save", IMAGE)
    with pytest.raises(BadRequest, match="it is a directory"):
        savefile.write(tmp_path, IMAGE)
    with pytest.raises(BadRequest, match="cannot read"):
        savefile.read(tmp_path / "nothing.save")


def test_only_a_regular_file_is_read_and_never_through_a_symlink(tmp_path: Path) -> None:
    good = tmp_path / "good.save"
    savefile.write(good, IMAGE)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opened without waiting for a writer, then refused
    link = tmp_path / "link"
    link.symlink_to(good)
    for path, why in ((Path("/dev/zero"), "a character device"), (fifo, "a FIFO"),
                      (tmp_path, "a directory"), (link, "a symbolic link")):
        with pytest.raises(BadRequest, match=f"cannot read {path}: it is {why}"):
            savefile.read(path)
        with pytest.raises(BadRequest, match=f"cannot read {path}: it is {why}"):
            savefile.Reader(path, "sim")
    assert savefile.read(good) == IMAGE


def test_a_save_replaces_a_save_file_or_an_empty_one_and_nothing_else(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_text("not ours")
    with pytest.raises(Conflict, match="it exists and is not a xend save file"):
        savefile.write(other, IMAGE)
    assert other.read_text() == "not ours"
    link = tmp_path / "link.save"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(BadRequest, match="it is a symbolic link"):
        savefile.write(link, IMAGE)
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(BadRequest, match="it is a character device"):
        savefile.check_target(Path("/dev/null"))
    empty = tmp_path / "empty.save"
    empty.touch()
    savefile.write(empty, IMAGE)
    savefile.write(empty, IMAGE)  # a save file of its own now
    assert savefile.read(empty) == IMAGE


def read_streamed(path: Path) -> savefile.Header:
    """Read the sim save file at ``path`` as a streamed restore does, checking it whole;
    its header."""
    reader = savefile.Reader(path, "sim")
    try:
        reader.finish()
        return reader.header
    finally:
        reader.close()
