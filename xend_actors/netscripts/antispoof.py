"""Per-vif anti-spoofing: a cls_bpf direct-action classifier on the vif's ingress.

Frames the guest sends enter the host on the vif's *ingress*.  The program lets a frame
through (``TC_ACT_OK``) unless it claims an address the guest isn't allowed to use:

* IPv4 (0x0800): the source address (offset 26) must be inside one of the allowed
  addresses/nets; source 0.0.0.0 is allowed for DHCP only (UDP 68 -> 67);
* ARP (0x0806): the sender protocol address (offset 28) must be allowed, or 0.0.0.0
  (an ARP probe, which poisons no cache);
* 802.1Q / 802.1ad tagged frames are dropped (they would hide the above);
* everything else (IPv6 included) passes, as with the original iptables rules.

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
ETH_P_IP, ETH_P_ARP, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x0806, 0x8100, 0x88A8
MAX_NETS = 64
FILTER_NAME = "xend_antispoof"
INGRESS = 0xFFFF0000  # ffff:


class AntispoofError(Exception):
    """Bad allowed addresses or the filter can't be set up."""


def parse_nets(words: Iterable[str]) -> list[ipaddress.IPv4Network]:
    """IPv4 addresses or CIDR nets (host bits allowed) from the ``ip=`` words."""
    nets = []
    for word in words:
        try:
            nets.append(ipaddress.IPv4Network(word, strict=False))
        except ValueError:
            raise AntispoofError(f"not an IPv4 address or net: {word!r}") from None
    if len(nets) > MAX_NETS:
        raise AntispoofError(f"at most {MAX_NETS} allowed addresses, got {len(nets)}")
    return nets


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


def build_program(nets: Sequence[ipaddress.IPv4Network]) -> bytes:
    """The classifier for ``nets`` as eBPF bytecode."""
    a = Assembler()
    a.mov64_reg(6, 1)  # r6 = skb, needed by the packet loads
    a.ld_abs("H", 12)  # ethertype
    a.jmp32_imm("==", 0, ETH_P_IP, "ipv4")
    a.jmp32_imm("==", 0, ETH_P_ARP, "arp")
    a.jmp32_imm("==", 0, ETH_P_8021Q, "drop")
    a.jmp32_imm("==", 0, ETH_P_8021AD, "drop")
    a.ja("accept")

    a.label("ipv4")
    a.ld_abs("W", 26)  # IPv4 source
    _match_nets(a, nets, "accept")
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
    a.ld_abs("W", 28)  # ARP sender protocol address
    a.jmp32_imm("==", 0, 0, "accept")
    _match_nets(a, nets, "accept")

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


def install(ipr: IPRoute, index: int, nets: Sequence[ipaddress.IPv4Network]) -> None:
    """(Re)place the anti-spoofing filter on link ``index``'s ingress."""
    if not nets:
        raise AntispoofError("no allowed addresses for anti-spoofing")
    fd = load_sched_cls(build_program(nets), name=FILTER_NAME)
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
