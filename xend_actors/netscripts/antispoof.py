"""Per-vif anti-spoofing: a cls_bpf direct-action classifier on the vif's ingress.

Frames the guest sends enter the host on the vif's *ingress*.  The program lets a frame
through (``TC_ACT_OK``) unless it claims an address the guest isn't allowed to use:

* every frame: the Ethernet source (offset 6) must be the vif's own MAC;
* IPv4 (0x0800): the source address (offset 26) must be inside one of the allowed
  IPv4 addresses/nets; source 0.0.0.0 is allowed for DHCP only (UDP 68 -> 67);
* ARP (0x0806): the sender hardware address (offset 22) must be the vif's MAC, and the
  sender protocol address (offset 28) allowed, or 0.0.0.0 (an ARP probe, which poisons
  no cache);
* IPv6 (0x86DD): the source address (offset 22) must be inside one of the allowed IPv6
  addresses/nets or be the link-local address the MAC makes (EUI-64, which neighbour
  discovery needs); the unspecified address ``::`` is allowed for ICMPv6 and hop-by-hop
  headers only (duplicate address detection, MLD);
* 802.1Q / 802.1ad tagged frames are dropped (they would hide the above);
* everything else passes (its source MAC checked).

The original's iptables rules checked IPv4 sources only; a guest could then still claim
another's IPv6 address or MAC.

A mismatch returns ``TC_ACT_SHOT``; the ingress qdisc's ``drop`` counter counts them.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.protocols import ETH_P_ALL

from .ebpf import Assembler, load_sched_cls

TC_ACT_OK, TC_ACT_SHOT = 0, 2
ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0800, 0x0806, 0x86DD
ETH_P_8021Q, ETH_P_8021AD = 0x8100, 0x88A8
IPPROTO_HOPOPTS, IPPROTO_ICMPV6 = 0, 58
MAX_NETS = 64
FILTER_NAME = "xend_antispoof"
INGRESS = 0xFFFF0000  # ffff:

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class AntispoofError(Exception):
    """Bad allowed addresses or the filter can't be set up."""


def parse_nets(words: Iterable[str]) -> list[Net]:
    """IPv4 or IPv6 addresses or CIDR nets (host bits allowed) from the ``ip=`` words."""
    nets: list[Net] = []
    for word in words:
        try:
            nets.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            raise AntispoofError(f"not an IPv4 or IPv6 address or net: {word!r}") from None
    if len(nets) > MAX_NETS:
        raise AntispoofError(f"at most {MAX_NETS} allowed addresses, got {len(nets)}")
    return nets


def link_local(mac: str) -> ipaddress.IPv6Network:
    """The EUI-64 link-local address ``mac`` makes (RFC 4291), as a /128."""
    raw = bytearray(bytes.fromhex(mac.replace(":", "")))
    raw[0] ^= 0x02  # the universal/local bit, inverted
    iid = bytes(raw[:3]) + b"\xff\xfe" + bytes(raw[3:])
    return ipaddress.IPv6Network((b"\xfe\x80" + bytes(6) + iid, 128))


def _match_nets(asm: Assembler, nets: Sequence[ipaddress.IPv4Network], ok: str) -> None:
    """Jump to ``ok`` if w0 lies in one of ``nets`` (w0 kept, w1 scratch)."""
    for net in nets:
        mask, base = int(net.netmask), int(net.network_address)
        if mask == 0:
            asm.ja(ok)
        elif mask == 0xFFFFFFFF:
            asm.jmp32_imm("==", 0, base, ok)
        else:
            asm.mov32_reg(1, 0)
            asm.and32_imm(1, mask)
            asm.jmp32_imm("==", 1, base, ok)


def _match_nets6(asm: Assembler, nets: Sequence[ipaddress.IPv6Network], offset: int,
                 ok: str) -> None:
    """Jump to ``ok`` if the 16 bytes at ``offset`` lie in one of ``nets`` (a word at a
    time, each masked; r0 clobbered)."""
    for i, net in enumerate(nets):
        miss = f"v6-miss-{i}"
        mask, base = int(net.netmask), int(net.network_address)
        for k in range(4):
            shift = 96 - 32 * k
            word_mask, word = (mask >> shift) & 0xFFFFFFFF, (base >> shift) & 0xFFFFFFFF
            if not word_mask:
                break  # the rest of the mask is zero too
            asm.ld_abs("W", offset + 4 * k)
            if word_mask != 0xFFFFFFFF:
                asm.and32_imm(0, word_mask)
            asm.jmp32_imm("!=", 0, word, miss)
        asm.ja(ok)
        asm.label(miss)


def _check_mac(asm: Assembler, mac: str, offset: int, bad: str) -> None:
    """Jump to ``bad`` unless the 6 bytes at ``offset`` are ``mac``."""
    raw = bytes.fromhex(mac.replace(":", ""))
    asm.ld_abs("H", offset)
    asm.jmp32_imm("!=", 0, int.from_bytes(raw[:2], "big"), bad)
    asm.ld_abs("W", offset + 2)
    asm.jmp32_imm("!=", 0, int.from_bytes(raw[2:], "big"), bad)


def build_program(nets: Sequence[Net], mac: str) -> bytes:
    """The classifier for a vif with MAC ``mac`` allowed ``nets``, as eBPF bytecode."""
    nets4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    nets6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)] + [link_local(mac)]
    a = Assembler()
    a.mov64_reg(6, 1)  # r6 = skb, needed by the packet loads
    _check_mac(a, mac, 6, "drop")  # Ethernet source
    a.ld_abs("H", 12)  # ethertype
    a.jmp32_imm("==", 0, ETH_P_IP, "ipv4")
    a.jmp32_imm("==", 0, ETH_P_ARP, "arp")
    a.jmp32_imm("==", 0, ETH_P_IPV6, "ipv6")
    a.jmp32_imm("==", 0, ETH_P_8021Q, "drop")
    a.jmp32_imm("==", 0, ETH_P_8021AD, "drop")
    a.ja("accept")

    a.label("ipv4")
    a.ld_abs("W", 26)  # IPv4 source
    _match_nets(a, nets4, "accept")
    a.jmp32_imm("!=", 0, 0, "drop")
    a.ld_abs("B", 23)  # protocol: source 0.0.0.0 is for DHCP over UDP only
    a.jmp32_imm("!=", 0, 17, "drop")
    a.ld_abs("B", 14)  # version/IHL
    a.and32_imm(0, 0x0F)
    a.lsh32_imm(0, 2)
    a.mov64_reg(7, 0)  # r7 = IP header length (r7 survives packet loads)
    a.ld_ind("H", 7, 14)  # UDP source port
    a.jmp32_imm("!=", 0, 68, "drop")
    a.ld_ind("H", 7, 16)  # UDP destination port
    a.jmp32_imm("!=", 0, 67, "drop")
    a.ja("accept")

    a.label("arp")
    _check_mac(a, mac, 22, "drop")  # ARP sender hardware address
    a.ld_abs("W", 28)  # ARP sender protocol address
    a.jmp32_imm("==", 0, 0, "accept")
    _match_nets(a, nets4, "accept")
    a.ja("drop")

    a.label("ipv6")
    _match_nets6(a, nets6, 22, "accept")  # IPv6 source
    for k in range(4):  # else only :: may go, and only for DAD and MLD
        a.ld_abs("W", 22 + 4 * k)
        a.jmp32_imm("!=", 0, 0, "drop")
    a.ld_abs("B", 20)  # next header
    a.jmp32_imm("==", 0, IPPROTO_ICMPV6, "accept")
    a.jmp32_imm("==", 0, IPPROTO_HOPOPTS, "accept")

    a.label("drop")
    a.mov32_imm(0, TC_ACT_SHOT)
    a.exit()
    a.label("accept")
    a.mov32_imm(0, TC_ACT_OK)
    a.exit()
    return a.assemble()


def _has_ingress(ipr: IPRoute, index: int) -> bool:
    return any(q.get_attr("TCA_KIND") == "ingress"
               for q in ipr.get_qdiscs(index=index))


def remove(ipr: IPRoute, index: int) -> bool:
    """Remove the ingress qdisc (and so the filter) from link ``index``; True if there was one."""
    if not _has_ingress(ipr, index):
        return False
    try:
        ipr.tc("del", "ingress", index, "ffff:")
    except NetlinkError as e:
        if e.code not in (2, 22):  # already gone
            raise
    return True


def install(ipr: IPRoute, index: int, nets: Sequence[Net], mac: str) -> None:
    """(Re)place the anti-spoofing filter on link ``index`` (MAC ``mac``)'s ingress."""
    if not nets:
        raise AntispoofError("no allowed addresses for anti-spoofing")
    fd = load_sched_cls(build_program(nets, mac), name=FILTER_NAME)
    try:
        remove(ipr, index)
        ipr.tc("add", "ingress", index, "ffff:")
        try:
            ipr.tc("add-filter", "bpf", index, ":1", parent="ffff:", fd=fd, name=FILTER_NAME,
                   direct_action=True, protocol=ETH_P_ALL, prio=1)
        except Exception:
            remove(ipr, index)
            raise
    finally:
        os.close(fd)  # the filter holds its own reference


def stats(ipr: IPRoute, index: int) -> dict | None:
    """``{'filter': bool, 'packets': n, 'drop': n}`` of the ingress qdisc, None without one."""
    for q in ipr.get_qdiscs(index=index):
        if q.get_attr("TCA_KIND") != "ingress":
            continue
        st = q.get_attr("TCA_STATS") or {}
        has_filter = any(f.get_attr("TCA_KIND") == "bpf"
                         for f in ipr.get_filters(index=index, parent=INGRESS))
        return {"filter": has_filter, "packets": st.get("packets", 0), "drop": st.get("drop", 0)}
    return None
