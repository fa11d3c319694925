"""Control messages: every message round-trips through the 64-byte frame, byte for byte as
facts §9.1-§9.4 lay it out, and a backend's non-OK status becomes an XendError."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xend_actors.errors import BadRequest, XendError
from xend_actors.hypervisor.ring import messages as m
from xend_actors.hypervisor.ring.messages import (
    BlkifBeConnect,
    BlkifBeCreate,
    BlkifBeDestroy,
    BlkifBeDisconnect,
    BlkifBeDriverStatus,
    BlkifBeVbdCreate,
    BlkifBeVbdDestroy,
    BlkifBeVbdGrow,
    BlkifBeVbdShrink,
    BlkifFeDriverStatus,
    BlkifFeInterfaceConnect,
    BlkifFeInterfaceStatus,
    BlkifStatus,
    DriverStatus,
    Extent,
    InterfaceStatus,
    MemRequest,
    MessageIds,
    MessageType,
    NetifBeConnect,
    NetifBeCreate,
    NetifBeDestroy,
    NetifBeDisconnect,
    NetifBeDriverStatus,
    NetifFeDriverStatus,
    NetifFeInterfaceConnect,
    NetifFeInterfaceStatus,
    NetifStatus,
    Shutdown,
    ShutdownSubtype,
    check,
    pack,
    unpack,
)

EXTENT = Extent(sector_start=0x1122_3344_5566_7788, sector_length=0x10, device=0x0301)

# One non-trivial instance of every message, with the (type, subtype, payload size) of §9.2/§9.3.
SAMPLES = [
    (BlkifBeCreate(7, 3, BlkifStatus.INTERFACE_EXISTS), 1, 0, 12),
    (BlkifBeDestroy(7, 3, BlkifStatus.INTERFACE_NOT_FOUND), 1, 1, 12),
    (BlkifBeConnect(7, 3, 0x1_2345_6789, 0xDEAD, BlkifStatus.MAPPING_ERROR), 1, 2, 24),
    (BlkifBeDisconnect(7, 3, BlkifStatus.INTERFACE_CONNECTED), 1, 3, 12),
    (BlkifBeVbdCreate(7, 3, 0x0801, 1, BlkifStatus.VBD_EXISTS), 1, 4, 16),
    (BlkifBeVbdDestroy(7, 3, 0x0802, BlkifStatus.VBD_NOT_FOUND), 1, 5, 16),
    (BlkifBeVbdGrow(7, 3, 0x0801, EXTENT, BlkifStatus.EXTENT_NOT_FOUND), 1, 6, 36),
    (BlkifBeVbdShrink(7, 3, 0x0803, BlkifStatus.OUT_OF_MEMORY), 1, 7, 16),
    (BlkifBeDriverStatus(DriverStatus.UP), 1, 32, 4),
    (BlkifFeInterfaceStatus(2, InterfaceStatus.CONNECTED, 17, 0), 2, 0, 12),
    (BlkifFeDriverStatus(DriverStatus.UP, 4), 2, 32, 8),
    (BlkifFeInterfaceConnect(2, 0xABCDE), 2, 33, 16),
    (NetifBeCreate(9, 1, "aa:00:11:22:33:44", NetifStatus.OUT_OF_MEMORY), 3, 0, 20),
    (NetifBeDestroy(9, 1, NetifStatus.ERROR), 3, 1, 12),
    (NetifBeConnect(9, 1, 0x1000, 0x2000, 33, NetifStatus.MAPPING_ERROR), 3, 2, 32),
    (NetifBeDisconnect(9, 1, NetifStatus.INTERFACE_CONNECTED), 3, 3, 12),
    (NetifBeDriverStatus(DriverStatus.DOWN), 3, 32, 4),
    (NetifFeInterfaceStatus(1, InterfaceStatus.CHANGED, 5, "00:16:3e:01:02:03", 0), 4, 0, 18),
    (NetifFeDriverStatus(DriverStatus.UP, 3), 4, 32, 8),
    (NetifFeInterfaceConnect(1, 0x3000, 0x4000), 4, 33, 24),
    (Shutdown(ShutdownSubtype.POWEROFF), 6, 0, 0),
    (Shutdown(ShutdownSubtype.REBOOT), 6, 1, 0),
    (Shutdown(ShutdownSubtype.SUSPEND), 6, 2, 0),
    (Shutdown(ShutdownSubtype.SYSRQ, "s"), 6, 3, 1),
    (MemRequest(65536, 2), 7, 0, 8),
]


def test_every_message_class_has_a_sample():
    assert {type(msg) for msg, *_ in SAMPLES} == set(m.MESSAGES)
    assert len(m.MESSAGES) == 22


@pytest.mark.parametrize(("message", "type_", "subtype", "size"), SAMPLES,
                         ids=[f"{type(s[0]).__name__}-{s[2]}" for s in SAMPLES])
def test_round_trip_and_header(message, type_, subtype, size):
    frame = pack(message, 42)
    assert len(frame) == 64
    assert (message.type, message.subtype) == (type_, subtype)
    assert frame[:4] == bytes([type_, subtype, 42, size])
    assert frame[4 + size:] == bytes(60 - size)  # unused payload is zero
    assert unpack(frame) == (42, message)
    assert type(unpack(frame)[1]) is type(message)


def _frame(type_, subtype, msg_id, payload_hex):
    payload = bytes.fromhex(payload_hex.replace(" ", ""))
    return bytes([type_, subtype, msg_id, len(payload)]) + payload.ljust(60, b"\0")


def test_vbd_grow_layout():
    msg = BlkifBeVbdGrow(domid=5, blkif_handle=1, vdevice=0x0801, extent=EXTENT,
                         status=BlkifStatus.VBD_EXISTS)
    expected = _frame(1, 6, 200,
                      "0500 0000"            # 0 domid, 2 pad
                      "01000000"             # 4 blkif_handle
                      "8877665544332211"     # 8 extent.sector_start
                      "1000000000000000"     # 16 extent.sector_length
                      "0103 0000"            # 24 extent.device, 26 pad
                      "0108 0000"            # 28 vdevice, 30 pad
                      "05000000")            # 32 status
    assert pack(msg, 200) == expected
    assert expected[3] == 36


def test_netif_be_create_layout():
    msg = NetifBeCreate(domid=3, netif_handle=2, mac="AA:00:11:22:33:44",
                        status=NetifStatus.INTERFACE_EXISTS)
    assert msg.mac == "aa:00:11:22:33:44"
    assert pack(msg, 1) == _frame(3, 0, 1, "0300 0000 02000000 aa0011223344 0000 02000000")


def test_blkif_be_connect_layout():
    msg = BlkifBeConnect(domid=7, blkif_handle=0, shmem_frame=0x12345, evtchn=4)
    assert pack(msg, 9) == _frame(1, 2, 9,
                                  "0700 0000 00000000 4523010000000000 04000000 00000000")


def test_netif_be_connect_layout():
    msg = NetifBeConnect(1, 0, tx_shmem_frame=0x10, rx_shmem_frame=0x20, evtchn=0x0102)
    assert pack(msg, 0) == _frame(3, 2, 0, "0100 0000 00000000 1000000000000000"
                                           "2000000000000000 0201 0000 00000000")


def test_vbd_create_layout():
    msg = BlkifBeVbdCreate(domid=1, blkif_handle=0, vdevice=0x0300, readonly=1)
    assert pack(msg, 3) == _frame(1, 4, 3, "0100 0000 00000000 0003 0100 00000000")


def test_frontend_status_layouts():
    blk = BlkifFeInterfaceStatus(handle=0, status=InterfaceStatus.CONNECTED, evtchn=6, domid=0)
    assert pack(blk, 4) == _frame(2, 0, 4, "00000000 02000000 0600 0000")
    net = NetifFeInterfaceStatus(handle=1, status=InterfaceStatus.DISCONNECTED, evtchn=0,
                                 mac="00:16:3e:aa:bb:cc", domid=0)
    assert pack(net, 5) == _frame(4, 0, 5, "01000000 01000000 0000 00163eaabbcc 0000")
    drv = NetifFeDriverStatus(DriverStatus.UP, max_handle=2)
    assert pack(drv, 6) == _frame(4, 32, 6, "01000000 02000000")


def test_shutdown_and_mem_request_layouts():
    assert pack(Shutdown(ShutdownSubtype.REBOOT), 8) == bytes([6, 1, 8, 0]) + bytes(60)
    assert pack(Shutdown(ShutdownSubtype.SYSRQ, "b"), 8) == _frame(6, 3, 8, "62")
    assert pack(MemRequest(target=0x10000), 2) == _frame(7, 0, 2, "00000100 00000000")


def test_unpack_ignores_bytes_past_length():
    frame = bytearray(pack(BlkifBeCreate(1, 0), 3))
    frame[4 + 12:] = b"\xff" * (60 - 12)
    assert unpack(bytes(frame)) == (3, BlkifBeCreate(1, 0))


# --- bad frames and bad values ---------------------------------------------------------


@pytest.mark.parametrize("size", [0, 4, 63, 65, 128])
def test_wrong_frame_length(size):
    with pytest.raises(BadRequest, match="64 bytes"):
        unpack(bytes(size))


@pytest.mark.parametrize(("type_", "subtype"), [(5, 0), (1, 8), (1, 31), (3, 4), (6, 4),
                                                 (7, 1), (0, 0), (2, 34), (255, 255)])
def test_unknown_type_or_subtype(type_, subtype):
    with pytest.raises(BadRequest, match=f"type {type_} subtype {subtype}"):
        unpack(bytes([type_, subtype, 0, 0]) + bytes(60))


@pytest.mark.parametrize("length", [0, 11, 13, 60, 255])
def test_wrong_payload_length(length):
    frame = bytearray(pack(BlkifBeCreate(1, 0), 0))
    frame[3] = length
    with pytest.raises(BadRequest, match="BlkifBeCreate has a 12-byte payload"):
        unpack(bytes(frame))


def test_unknown_status_in_a_frame():
    frame = bytearray(pack(BlkifBeCreate(1, 0), 0))
    frame[4 + 8] = 42
    with pytest.raises(BadRequest, match="status 42"):
        unpack(bytes(frame))


@pytest.mark.parametrize("make", [
    lambda: BlkifBeCreate(70000, 0),
    lambda: BlkifBeCreate(-1, 0),
    lambda: BlkifBeCreate(1, 2**32),
    lambda: BlkifBeCreate(1, 0, status=10),
    lambda: BlkifBeCreate("1", 0),
    lambda: NetifBeCreate(1, 0, "aa:bb:cc:dd:ee"),
    lambda: NetifBeCreate(1, 0, "aa-bb-cc-dd-ee-ff"),
    lambda: NetifBeCreate(1, 0, status=7, mac="aa:bb:cc:dd:ee:ff"),
    lambda: BlkifBeVbdGrow(1, 0, 0x301, extent=(0, 1, 2)),
    lambda: Extent(0, 2**64, 1),
    lambda: Shutdown(ShutdownSubtype.SYSRQ),
    lambda: Shutdown(ShutdownSubtype.POWEROFF, "a"),
    lambda: Shutdown(ShutdownSubtype.SYSRQ, "ab"),
    lambda: Shutdown(9),
    lambda: BlkifFeInterfaceStatus(0, status=4),
])
def test_bad_values_raise_bad_request(make):
    with pytest.raises(BadRequest):
        make()


@pytest.mark.parametrize("msg_id", [-1, 256, 1000])
def test_bad_message_id(msg_id):
    with pytest.raises(BadRequest, match="message id"):
        pack(BlkifBeCreate(1, 0), msg_id)


def test_messages_are_frozen_and_values():
    msg = BlkifBeCreate(1, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.domid = 2  # type: ignore[misc]
    assert msg == BlkifBeCreate(domid=1, blkif_handle=0, status=BlkifStatus.OKAY)
    assert hash(msg) == hash(BlkifBeCreate(1, 0))
    assert dataclasses.replace(msg, status=5).status is BlkifStatus.VBD_EXISTS
    assert msg.type is MessageType.BLKIF_BE


# --- status codes and check ------------------------------------------------------------

BLKIF_TEXTS = ["Okay", "Non-specific error", "Interface already exists", "Interface not found",
               "Interface is still connected", "VBD already exists", "VBD not found",
               "Out of memory", "Extent not found for VBD", "Could not map domain memory"]
NETIF_TEXTS = [*BLKIF_TEXTS[:5], "Out of memory", "Could not map domain memory"]


def test_status_texts():
    assert [s.text for s in BlkifStatus] == BLKIF_TEXTS
    assert [int(s) for s in BlkifStatus] == list(range(10))
    assert [s.text for s in NetifStatus] == NETIF_TEXTS
    assert [int(s) for s in NetifStatus] == list(range(7))
    assert BlkifStatus(5).name == "VBD_EXISTS"
    assert NetifStatus(5).name == "OUT_OF_MEMORY"
    assert [int(s) for s in InterfaceStatus] == [0, 1, 2, 3]
    assert [s.name for s in InterfaceStatus] == ["CLOSED", "DISCONNECTED", "CONNECTED", "CHANGED"]
    assert (DriverStatus.DOWN, DriverStatus.UP) == (0, 1)


def test_type_values():
    assert {t.name: int(t) for t in MessageType} == {
        "CMSG_CONSOLE": 0, "BLKIF_BE": 1, "BLKIF_FE": 2, "NETIF_BE": 3, "NETIF_FE": 4,
        "SHUTDOWN": 6, "MEM_REQUEST": 7}


def test_check_raises_naming_device_and_status():
    response = BlkifBeVbdCreate(5, 0, 0x801, status=BlkifStatus.VBD_EXISTS)
    with pytest.raises(XendError) as info:
        check(response, "vbd sda1 of domain 5")
    assert str(info.value) == "vbd sda1 of domain 5: blkif backend says: VBD already exists"
    assert info.value.status == 409  # there already: the client's conflict, not a failure
    with pytest.raises(XendError) as gone:
        check(NetifBeConnect(5, 0, 1, 2, 3, status=3), "vif 5.0")
    assert gone.value.status == 404
    with pytest.raises(XendError, match=r"^vif 5\.0: netif backend says: Could not map domain") \
            as failed:
        check(NetifBeConnect(5, 0, 1, 2, 3, status=6), "vif 5.0")
    assert failed.value.status == 500
    with pytest.raises(XendError, match="domain 3: memory request failed with status 1"):
        check(MemRequest(100, 1), "domain 3")


def test_check_passes_ok_and_statusless_responses():
    check(BlkifBeVbdGrow(5, 0, 0x801, EXTENT), "vbd")
    check(NetifBeCreate(5, 0, "aa:bb:cc:dd:ee:ff"), "vif")
    check(MemRequest(100), "domain")
    check(Shutdown(ShutdownSubtype.REBOOT), "domain")
    check(BlkifFeInterfaceStatus(0, InterfaceStatus.CLOSED), "frontend")  # not a backend status


@pytest.mark.parametrize("status", [s for s in BlkifStatus if s])
def test_check_every_blkif_error(status):
    with pytest.raises(XendError, match=f"blkif backend says: {status.text}$"):
        check(unpack(pack(BlkifBeCreate(1, 0, status), 0))[1], "blkif 1")


# --- message ids -----------------------------------------------------------------------


def test_ids_wrap_at_256():
    ids = MessageIds()
    assert [ids.next() for _ in range(258)] == [*range(256), 0, 1]
    assert MessageIds(start=255).next() == 255


def test_ids_thread_safe():
    ids = MessageIds()
    got: list[int] = []
    lock = threading.Lock()

    def take():
        mine = [ids.next() for _ in range(512)]
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(got) == dict.fromkeys(range(256), 16)


# --- property: unpack(pack(m)) == m ----------------------------------------------------

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u64 = st.integers(0, 2**64 - 1)
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
extents = st.builds(Extent, u64, u64, u16)
blk = st.sampled_from(BlkifStatus)
net = st.sampled_from(NetifStatus)
ifs = st.sampled_from(InterfaceStatus)
drv = st.sampled_from(DriverStatus)

STRATEGIES = {
    BlkifBeCreate: st.builds(BlkifBeCreate, u16, u32, blk),
    BlkifBeDestroy: st.builds(BlkifBeDestroy, u16, u32, blk),
    BlkifBeConnect: st.builds(BlkifBeConnect, u16, u32, u64, u32, blk),
    BlkifBeDisconnect: st.builds(BlkifBeDisconnect, u16, u32, blk),
    BlkifBeVbdCreate: st.builds(BlkifBeVbdCreate, u16, u32, u16, u16, blk),
    BlkifBeVbdDestroy: st.builds(BlkifBeVbdDestroy, u16, u32, u16, blk),
    BlkifBeVbdGrow: st.builds(BlkifBeVbdGrow, u16, u32, u16, extents, blk),
    BlkifBeVbdShrink: st.builds(BlkifBeVbdShrink, u16, u32, u16, blk),
    BlkifBeDriverStatus: st.builds(BlkifBeDriverStatus, drv),
    BlkifFeInterfaceStatus: st.builds(BlkifFeInterfaceStatus, u32, ifs, u16, u16),
    BlkifFeDriverStatus: st.builds(BlkifFeDriverStatus, drv, u32),
    BlkifFeInterfaceConnect: st.builds(BlkifFeInterfaceConnect, u32, u64),
    NetifBeCreate: st.builds(NetifBeCreate, u16, u32, macs, net),
    NetifBeDestroy: st.builds(NetifBeDestroy, u16, u32, net),
    NetifBeConnect: st.builds(NetifBeConnect, u16, u32, u64, u64, u16, net),
    NetifBeDisconnect: st.builds(NetifBeDisconnect, u16, u32, net),
    NetifBeDriverStatus: st.builds(NetifBeDriverStatus, drv),
    NetifFeInterfaceStatus: st.builds(NetifFeInterfaceStatus, u32, ifs, u16, macs, u16),
    NetifFeDriverStatus: st.builds(NetifFeDriverStatus, drv, u32),
    NetifFeInterfaceConnect: st.builds(NetifFeInterfaceConnect, u32, u64, u64),
    Shutdown: st.one_of(
        st.sampled_from([ShutdownSubtype.POWEROFF, ShutdownSubtype.REBOOT,
                         ShutdownSubtype.SUSPEND]).map(Shutdown),
        st.characters(max_codepoint=127).map(lambda k: Shutdown(ShutdownSubtype.SYSRQ, k))),
    MemRequest: st.builds(MemRequest, u32, u32),
}


def test_every_class_has_a_strategy():
    assert set(STRATEGIES) == set(m.MESSAGES)


@given(st.one_of(*STRATEGIES.values()), st.integers(0, 255))
def test_pack_unpack_round_trip(message, msg_id):
    frame = pack(message, msg_id)
    assert len(frame) == 64
    assert frame[3] == message.layout().size
    assert unpack(frame) == (msg_id, message)


@given(st.binary(min_size=64, max_size=64))
def test_unpack_arbitrary_frames_is_a_message_or_bad_request(frame):
    try:
        msg_id, message = unpack(frame)
    except BadRequest:
        return
    assert msg_id == frame[2]
    assert unpack(pack(message, msg_id)) == (msg_id, message)  # padding is not kept
