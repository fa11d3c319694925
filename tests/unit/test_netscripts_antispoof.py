"""The netscripts' argument words, and the anti-spoofing eBPF program run on crafted frames.

The program tests load it with bpf(2) and run it with BPF_PROG_TEST_RUN, which needs root;
nothing is attached to any network device.
"""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest

from xend_actors.netscripts import antispoof, ebpf
from xend_actors.netscripts.cli import ScriptError, parse, yes_no

OK, SHOT = antispoof.TC_ACT_OK, antispoof.TC_ACT_SHOT


def test_parse_words_like_the_original() -> None:
    op, v = parse(["up", "vif='vif1.0'", "ip='10.0.0.1 10.0.0.2'", "bridge=xen-br0"],
                  ("up", "down"), ("vif", "ip", "bridge"))
    assert op == "up" and v == {"vif": "vif1.0", "ip": "10.0.0.1 10.0.0.2", "bridge": "xen-br0"}
    op, v = parse(["--state-dir", "/x", "start"], ("start",), (), options=("state-dir",))
    assert v == {"state-dir": "/x"}
    for bad in (["up", "nope=1"], ["sideways"], [], ["up", "up"], ["up", "--what=1"]):
        with pytest.raises(ScriptError):
            parse(bad, ("up", "down"), ("vif",))
    assert yes_no("on", "x") and not yes_no("No", "x")
    with pytest.raises(ScriptError):
        yes_no("maybe", "x")


def test_parse_nets() -> None:
    nets = antispoof.parse_nets(["10.0.0.1", "192.168.7.9/24"])
    assert [str(n) for n in nets] == ["10.0.0.1/32", "192.168.7.0/24"]
    assert [str(n) for n in antispoof.parse_nets(["fd00::1", "fd00:1::7/64"])] == [
        "fd00::1/128", "fd00:1::/64"]
    with pytest.raises(antispoof.AntispoofError, match="IPv4 or IPv6"):
        antispoof.parse_nets(["10.0.0.300"])
    with pytest.raises(antispoof.AntispoofError):
        antispoof.parse_nets([f"10.0.{i // 256}.{i % 256}" for i in range(65)])


def test_assembler_encodes_instructions() -> None:
    a = ebpf.Assembler()
    a.jmp32_imm("==", 0, 0xC0A80000, "out")
    a.mov32_imm(0, 2)
    a.label("out")
    a.exit()
    code = a.assemble()
    assert len(code) == 24
    assert code[:8] == struct.pack("<BBhi", 0x16, 0x00, 1, -0x3F580000)
    assert code[16:] == bytes([0x95, 0, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ebpf.BpfError):
        b = ebpf.Assembler()
        b.ja("nowhere")
        b.assemble()


# --- frames ----------------------------------------------------------------------------------

MAC = "00:16:3e:00:00:01"
MACS = bytes.fromhex("ffffffffffff" "00163e000001")
FOREIGN = bytes.fromhex("ffffffffffff" "00163e000099")


def test_the_link_local_address_of_a_mac_is_its_eui64() -> None:
    assert str(antispoof.link_local(MAC)) == "fe80::216:3eff:fe00:1/128"


def _ip(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def ipv4(src: str, dst: str = "10.99.0.1", proto: int = 1, payload: bytes = b"\0" * 8) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                       _ip(src), _ip(dst))
    return MACS + b"\x08\x00" + head + payload


def udp(src: str, sport: int, dport: int) -> bytes:
    return ipv4(src, "255.255.255.255", 17, struct.pack("!HHHH", sport, dport, 8, 0) + b"x" * 8)


def arp(sender: str, hardware: bytes = MACS[6:]) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, hardware, _ip(sender),
                       b"\0" * 6, _ip("10.99.0.1"))
    return MACS + b"\x08\x06" + body + b"\0" * 18


def ipv6(src: str, next_header: int = 58, payload: bytes = b"\0" * 8) -> bytes:
    head = struct.pack("!IHBB16s16s", 0x60000000, len(payload), next_header, 255,
                       ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address("ff02::1").packed)
    return MACS + b"\x86\xdd" + head + payload


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loading eBPF programs needs root")


@pytest.fixture
def prog() -> int:
    nets = antispoof.parse_nets(["10.99.0.2", "10.99.0.64/26", "fd00:99::2", "fd00:99:1::/64"])
    fd = ebpf.load_sched_cls(antispoof.build_program(nets, MAC))
    yield fd
    os.close(fd)


@needs_root
@pytest.mark.parametrize(("frame", "verdict"), [
    (ipv4("10.99.0.2"), OK),
    (ipv4("10.99.0.77"), OK),  # inside 10.99.0.64/26
    (ipv4("10.99.0.3"), SHOT),
    (ipv4("10.99.0.128"), SHOT),
    (ipv4("192.168.0.2"), SHOT),
    (udp("0.0.0.0", 68, 67), OK),  # DHCP discover
    (udp("0.0.0.0", 68, 53), SHOT),
    (udp("0.0.0.0", 1234, 67), SHOT),
    (ipv4("0.0.0.0"), SHOT),  # ICMP from nowhere
    (arp("10.99.0.2"), OK),
    (arp("10.99.0.100"), OK),
    (arp("0.0.0.0"), OK),  # ARP probe
    (arp("10.99.0.9"), SHOT),
    (MACS + b"\x81\x00" + b"\0\x01\x08\x00" + ipv4("10.99.0.2")[14:], SHOT),  # VLAN tagged
    (FOREIGN + ipv4("10.99.0.2")[12:], SHOT),  # another's MAC
    (arp("10.99.0.2", FOREIGN[6:]), SHOT),  # ARP naming another's MAC
    (ipv6("fd00:99::2"), OK),
    (ipv6("fd00:99:1::abcd"), OK),  # inside fd00:99:1::/64
    (ipv6("fd00:99::3"), SHOT),
    (ipv6("fd00:99:2::2"), SHOT),
    (ipv6("fe80::216:3eff:fe00:1"), OK),  # its own link-local address
    (ipv6("fe80::216:3eff:fe00:99"), SHOT),  # another's
    (ipv6("::"), OK),  # duplicate address detection (ICMPv6)
    (ipv6("::", 0), OK),  # MLD (hop-by-hop first)
    (ipv6("::", 17), SHOT),  # UDP from nowhere
    (FOREIGN + ipv6("fd00:99::2")[12:], SHOT),
    (MACS + b"\x88\xcc" + b"\0" * 46, OK),  # other protocols: the MAC is checked
    (FOREIGN + b"\x88\xcc" + b"\0" * 46, SHOT),
], ids=lambda x: x.hex()[24:40] if isinstance(x, bytes) else str(x))
def test_program_verdicts(prog: int, frame: bytes, verdict: int) -> None:
    assert ebpf.prog_test_run(prog, frame) == verdict


@needs_root
def test_program_loads_with_many_nets() -> None:
    nets = antispoof.parse_nets([f"10.{i}.0.0/16" for i in range(antispoof.MAX_NETS // 2)]
                                + [f"fd00:{i}::/48" for i in range(antispoof.MAX_NETS // 2)])
    fd = ebpf.load_sched_cls(antispoof.build_program(nets, MAC))
    try:
        assert ebpf.prog_test_run(fd, ipv4("10.31.1.2")) == OK
        assert ebpf.prog_test_run(fd, ipv4("10.32.1.2")) == SHOT
        assert ebpf.prog_test_run(fd, ipv6("fd00:31::1")) == OK
        assert ebpf.prog_test_run(fd, ipv6("fd00:32::1")) == SHOT
    finally:
        os.close(fd)
