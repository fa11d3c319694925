"""A domain's (vm ...) config read into a DomainConfig (xend-facts.md §5)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xend_actors import sxp
from xend_actors.device.config import PciConfig, VbdConfig, VifConfig, device_sxpr, parse_device
from xend_actors.domain.config import (
    NAME_RULE,
    DomainConfig,
    LinuxImageConfig,
    RestartMode,
    check_new_domain,
    parse_domain_config,
)
from xend_actors.errors import BadRequest
from xend_actors.hypervisor.base import LinuxImage
from xend_actors.mac import random_mac

EXAMPLES = Path(__file__).parents[1] / "data" / "reference-examples"
SHIPPED = Path(__file__).resolve().parents[2] / "etc" / "examples"
RANDOM_MAC = re.compile(r"aa:00:00:[0-7][0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2}")
VM_FILES = [
    "xen_config-xendom1.sxp",
    "xen_config-xendom2.sxp",
    "ttylinux.expected.sxp",
    "xmexample1.expected.sxp",
    "xmexample2-vmid3.expected.sxp",
]


def example(name: str) -> sxp.Value:
    return sxp.parse((EXAMPLES / name).read_text())


def config(text: str) -> DomainConfig:
    return parse_domain_config(sxp.parse(text))


def vm(*fields: str, name: str = "(name d)", memory: str = "(memory 64)",
       image: str = "(image (linux (kernel /boot/k)))") -> str:
    return f"(vm {name} {memory} {image} {' '.join(fields)})"


@pytest.mark.parametrize("name", VM_FILES)
def test_every_example_vm_parses_and_keeps_its_config(name: str) -> None:
    parsed = parse_domain_config(example(name))
    assert parsed.name
    assert parsed.memory_mb == 64
    assert parsed.image.kernel.startswith("/boot/vmlinuz-")
    assert sxp.child_value(parsed.sxpr, "name") == parsed.name


def test_defaults() -> None:
    parsed = config(vm())
    assert parsed == DomainConfig(
        name="d", memory_mb=64, maxmem_mb=None, cpu=-1, cpu_weight=1.0, console_port=None,
        restart=RestartMode.ONREBOOT, image=LinuxImageConfig("/boot/k"), backends=frozenset(),
        devices=(), vnets=(), sxpr=sxp.parse(vm()), warnings=(),
    )


def test_every_field() -> None:
    parsed = config(vm(
        "(maxmem 256) (cpu 2) (cpu_weight 0.5) (console 9700) (restart always)",
        "(backend (blkif)) (backend (netif))",
        "(device (vbd (uname phy:sda7) (dev sda1) (mode 'w!') (backend 0)))",
        "(device (vif (mac AA:0:00:1:2:fE) (bridge br1) (script vif-route) (ip 10.0.0.1)"
        " (ip 10.0.1.0/24) (backend 0) (vifname vif-d)))",
        "(device (pci (bus 0x1a) (dev 2) (func 0x1)))",
        image="(image (linux (kernel /boot/k) (ramdisk /boot/initrd) (ip 10.0.0.1::::d:eth0:off)"
              " (root '/dev/sda1 ro') (args 4)))",
    ))
    assert (parsed.maxmem_mb, parsed.cpu, parsed.cpu_weight, parsed.console_port) == (
        256, 2, 0.5, 9700
    )
    assert parsed.restart is RestartMode.ALWAYS
    assert parsed.backends == {"blkif", "netif"}
    assert parsed.image == LinuxImageConfig(
        "/boot/k", "/boot/initrd", "10.0.0.1::::d:eth0:off", "/dev/sda1 ro", "4"
    )
    vbd, vif, pci = parsed.devices
    assert vbd == VbdConfig("phy:sda7", "sda1", "w!", 0)
    assert (vbd.writable, vbd.shared_ok) == (True, True)
    assert vif == VifConfig("aa:00:00:01:02:fe", "br1", "vif-route", ("10.0.0.1", "10.0.1.0/24"),
                            0, "vif-d")
    assert pci == PciConfig(0x1A, 2, 1)


def test_xendom2_double_quotes_attributes_and_vnet() -> None:
    parsed = parse_domain_config(example("xen_config-xendom2.sxp"))
    assert parsed.image == LinuxImageConfig(
        kernel="/boot/vmlinuz-2.4.26-xen",
        ip="::::xendom2:eth0:dhcp",
        root="/dev/nfs",
        args="rw fastboot nfsroot=15.144.25.79:/opt/xen/xendom2 4",
    )
    assert parsed.devices == (VifConfig("aa:00:00:00:00:12"), VifConfig("aa:00:00:00:10:12"))
    assert parsed.sxpr == example("xen_config-xendom2.sxp")
    assert [sxp.attribute(sxp.child0(d), "id") for d in sxp.children(parsed.sxpr, "device")] == [
        "vif1", "vif2"
    ]
    assert parsed.vnets == (sxp.child(example("xen_config-xendom2.sxp"), "vnet"),)
    assert len(parsed.warnings) == 1
    assert "vnet" in parsed.warnings[0]


def test_xendom1_vif_without_mac_gets_one_in_sxpr() -> None:
    original = example("xen_config-xendom1.sxp")
    parsed = parse_domain_config(original)
    vif, vbd = parsed.devices
    assert RANDOM_MAC.fullmatch(vif.mac)
    assert vbd == VbdConfig("phy:hda1", "xda1", "w")
    assert sxp.children(parsed.sxpr, "device")[0] == ["device", ["vif", ["mac", vif.mac]]]
    assert original == example("xen_config-xendom1.sxp"), "the caller's value is left alone"
    assert parse_domain_config(parsed.sxpr) == parsed, "a restart from sxpr keeps the MAC"


def test_generated_mac_goes_first_after_attributes() -> None:
    parsed = config(vm("(device (vif (@ (id v)) (bridge br0) (mac)))"))
    (vif,) = parsed.devices
    assert sxp.child0(sxp.child(parsed.sxpr, "device")) == [
        "vif", ["@", ["id", "v"]], ["mac", vif.mac], ["bridge", "br0"]
    ]


def test_the_sim_example_parses() -> None:
    parsed = parse_domain_config(sxp.parse((SHIPPED / "sim-domain.sxp").read_text()))
    assert (parsed.name, parsed.memory_mb, parsed.image.kernel) == ("sim1", 64, "/boot/vmlinuz-sim")
    assert [type(device) for device in parsed.devices] == [VbdConfig, VifConfig]
    assert parsed.devices[0].uname.startswith("file:")


@pytest.mark.parametrize(("image", "cmdline"), [
    (LinuxImageConfig("/k"), ""),
    (LinuxImageConfig("/k", ip="1.2.3.4:1.2.3.4::::eth0:off"), " ip=1.2.3.4:1.2.3.4::::eth0:off"),
    (LinuxImageConfig("/k", root="/dev/sda1 ro"), " root=/dev/sda1 ro"),
    (LinuxImageConfig("/k", args="4"), " 4"),
    (LinuxImageConfig("/k", ip="a", root="/dev/nfs", args="rw 4"), " ip=a root=/dev/nfs rw 4"),
])
def test_cmdline(image: LinuxImageConfig, cmdline: str) -> None:
    assert image.cmdline == cmdline
    assert image.image() == LinuxImage("/k", "", cmdline)


def test_ramdisk_goes_to_the_image() -> None:
    assert LinuxImageConfig("/k", "/r", args="x").image() == LinuxImage("/k", "/r", " x")


def test_first_of_repeated_fields_wins() -> None:
    parsed = config("(vm (name a) (name b) (memory 32) (memory 64)"
                    " (image (linux (kernel /k1))) (image (linux (kernel /k2))))")
    assert (parsed.name, parsed.memory_mb, parsed.image.kernel) == ("a", 32, "/k1")


def test_unknown_fields_are_warned_not_refused() -> None:
    parsed = config(vm("(id 7) (vcpus 2) stray"))
    assert parsed.warnings == (
        "config field not processed: id",
        "unknown config field ignored: (vcpus 2)",
        "unknown config field ignored: stray",
    )


MB = "give a whole number of MB, at least 1"
CPU = "give -1 (any cpu) or a cpu number (0, 1, ...)"
WEIGHT = "give a number greater than 0"
PORT = "give a port number 1..65535"
KERNEL = "give (kernel /path/to/vmlinuz) in (image (linux ...))"
DEVICE = "expected (vbd ...), (vif ...) or (pci ...)"
MODE = "use r, w, r! or w! (! shares a disk another domain writes to)"
MAC = "use six hex bytes separated by ':' (aa:00:00:12:34:56)"
PCI = "give (bus B) (dev D) (func F)"


@pytest.mark.parametrize(("text", "message"), [
    ("(vnet (id 97))", "Configuration error: expected (vm ...), got (vnet (id 97))"),
    ("vm", "Configuration error: expected (vm ...), got vm"),
    ("(vm (memory 64))", f"missing vm name: give (name NAME); {NAME_RULE}"),
    (vm(name="(name)"), f"missing vm name: give (name NAME); {NAME_RULE}"),
    (vm(name="(name 1st)"), f"invalid vm name '1st': {NAME_RULE}"),
    (vm(name="(name 'a b')"), f"invalid vm name 'a b': {NAME_RULE}"),
    (vm(name="(name (x))"), f"invalid vm name '(x)': {NAME_RULE}"),
    (vm(name="(name a_-.:/+Z9)"), None),
    (vm(name=f"(name {'a' * 64})"), None),
    (vm(name=f"(name {'a' * 65})"),
     f"invalid vm name '{'a' * 20}'...: longer than 64 characters; {NAME_RULE}"),
    ("(vm (name d) (image (linux (kernel /k))))", "missing memory: give (memory MB)"),
    (vm(memory="(memory 0)"), f"invalid memory: 0: {MB}"),
    (vm(memory="(memory -64)"), f"invalid memory: -64: {MB}"),
    (vm(memory="(memory 6.4)"), f"invalid memory: 6.4: {MB}"),
    (vm(memory="(memory lots)"), f"invalid memory: lots: {MB}"),
    (vm(memory="(memory (64))"), f"invalid memory: (64): {MB}"),
    (vm("(maxmem 0)"), f"invalid maxmem: 0: {MB}"),
    (vm("(maxmem x)"), f"invalid maxmem: x: {MB}"),
    (vm("(cpu x)"), f"invalid cpu x: {CPU}"),
    (vm("(cpu -2)"), f"invalid cpu -2: {CPU}"),
    (vm("(cpu_weight x)"), f"invalid cpu weight x: {WEIGHT}"),
    (vm("(cpu_weight nan)"), f"invalid cpu weight nan: {WEIGHT}"),
    (vm("(cpu_weight 0)"), f"invalid cpu weight 0: {WEIGHT}"),
    (vm("(console x)"), f"invalid console:x: {PORT}"),
    (vm("(console 0)"), f"invalid console:0: {PORT}"),
    (vm("(console 65536)"), f"invalid console:65536: {PORT}"),
    (vm("(restart sometimes)"),
     "invalid restart mode: sometimes: use onreboot, always or never"),
    ("(vm (name d) (memory 64))",
     "missing image: give (image (linux (kernel /path/to/vmlinuz)))"),
    (vm(image="(image (plan9 (kernel /k)))"),
     "unknown image type: plan9: only linux is known: (image (linux (kernel "
     "/path/to/vmlinuz)))"),
    (vm(image="(image (linux))"), f"missing kernel: {KERNEL}"),
    (vm(image=f"(image (linux (kernel /{'k' * 4096})))"),
     "kernel path longer than 4096 characters"),
    (vm(image=f"(image (linux (kernel /k) (args {'a' * 4096})))"),
     "kernel command line (ip, root and args) longer than 4096 characters"),
    (vm(image="(image (linux (ramdisk /r)))"), f"missing kernel: {KERNEL}"),
    (vm(image="(image (linux (kernel vmlinuz)))"), "kernel must be an absolute path: vmlinuz"),
    (vm(image="(image (linux (kernel /k) (ramdisk initrd)))"),
     "ramdisk must be an absolute path: initrd"),
    (vm("(backend (usbif))"),
     "invalid backend type:usbif: use (backend (blkif)) or (backend (netif))"),
    (vm("(device)"), f"invalid device (none): {DEVICE}"),
    (vm("(device vif)"), f"invalid device vif: {DEVICE}"),
    (vm("(device (usb (port 1)))"), "unknown device type: usb: use vbd, vif or pci"),
    (vm("(device (vbd (dev sda1)))"), "vbd: Missing uname"),
    (vm("(device (vbd (uname phy:sda1)))"), "vbd: Missing dev"),
    (vm("(device (vbd (uname phy:sda1) (dev sda1) (mode rw)))"), f"invalid vbd mode: rw: {MODE}"),
    (vm("(device (vbd (uname phy:sda1) (dev sda1) (mode x)))"), f"invalid vbd mode: x: {MODE}"),
    (vm("(device (vbd (uname phy:sda1) (dev sda1) (backend dom0)))"),
     "vbd: invalid backend: dom0: give the backend's domain id, a whole number"),
    (vm("(device (vif (mac aa:00:00:00:00)))"), f"invalid mac: aa:00:00:00:00: {MAC}"),
    (vm("(device (vif (mac aa:00:00:00:00:100)))"), f"invalid mac: aa:00:00:00:00:100: {MAC}"),
    (vm("(device (vif (mac zz:00:00:00:00:01)))"), f"invalid mac: zz:00:00:00:00:01: {MAC}"),
    (vm("(device (vif (vifname way-too-long-a-name)))"),
     "invalid vifname: way-too-long-a-name: use 1 to 15 letters, digits and _ . : -"),
    (vm("(device (pci (dev 2) (func 1)))"), f"pci: Missing bus: {PCI}"),
    (vm("(device (pci (bus 1) (func 1)))"), f"pci: Missing dev: {PCI}"),
    (vm("(device (pci (bus 1) (dev 2)))"), f"pci: Missing func: {PCI}"),
    (vm("(device (pci (bus 1) (dev 2) (func 8)))"),
     "pci: invalid func: 8: give a number 0..0x7, decimal or 0x hex"),
    (vm("(device (pci (bus 0xg) (dev 2) (func 1)))"),
     "pci: invalid bus: 0xg: give a number 0..0xff, decimal or 0x hex"),
])
def test_errors(text: str, message: str | None) -> None:
    if message is None:
        config(text)
        return
    with pytest.raises(BadRequest) as error:
        config(text)
    assert error.value.message == message
    assert error.value.status == 400


@pytest.mark.parametrize("mode", ["r", "w", "r!", "w!"])
def test_vbd_modes(mode: str) -> None:
    (vbd,) = config(vm(f"(device (vbd (uname phy:sda1) (dev sda1) (mode '{mode}')))")).devices
    assert (vbd.mode, vbd.writable, vbd.shared_ok) == (mode, "w" in mode, "!" in mode)


def test_vbd_mode_defaults_to_read_only() -> None:
    (vbd,) = config(vm("(device (vbd (uname phy:sda1) (dev sda1)))")).devices
    assert (vbd.mode, vbd.writable) == ("r", False)


@pytest.mark.parametrize("device", [
    VbdConfig("phy:sda7", "sda1"),
    VbdConfig("file:/images/a b.img", "hda1", "w!", 3),
    VifConfig("aa:00:00:01:02:03"),
    VifConfig("aa:00:00:01:02:03", "br0", "vif-bridge", ("10.0.0.1", "10.1.0.0/16"), 2, "vifd.0"),
    PciConfig(0, 0, 0),
    PciConfig(0xFF, 0x1F, 7),
])
def test_device_sxpr_round_trips(device: VbdConfig | VifConfig | PciConfig) -> None:
    assert parse_device(device_sxpr(device)) == device
    assert parse_device(sxp.parse(sxp.show(device_sxpr(device)))) == device


def test_parse_device_gives_a_vif_without_mac_a_random_one() -> None:
    vif = parse_device(["vif", ["bridge", "br0"]])
    assert isinstance(vif, VifConfig)
    assert RANDOM_MAC.fullmatch(vif.mac)
    assert vif.bridge == "br0"


@pytest.mark.parametrize("value", ["vbd", [], [["vbd"]], ["disk", ["uname", "phy:a"]]])
def test_parse_device_refuses_what_is_not_a_device(value: sxp.Value) -> None:
    with pytest.raises(BadRequest):
        parse_device(value)


def test_random_mac_rule() -> None:
    macs = {random_mac() for _ in range(200)}
    assert all(RANDOM_MAC.fullmatch(mac) for mac in macs)
    assert len(macs) > 190


NAMES = ["vm", "name", "memory", "maxmem", "cpu", "cpu_weight", "console", "restart", "image",
         "linux", "kernel", "ramdisk", "ip", "root", "args", "backend", "blkif", "netif", "device",
         "vbd", "vif", "pci", "uname", "dev", "mode", "mac", "bridge", "bus", "func", "vifname",
         "@", "id", "vnet"]
atoms = st.sampled_from(
    [*NAMES, "", "0", "1", "-1", "64", "1e999", "nan", "0x1f", "w!", "/k", "aa:00:00:00:00:01",
     "always", "x y"]
) | st.text(max_size=4)
values = st.recursive(
    atoms,
    lambda inner: st.lists(inner, max_size=4)
    | st.builds(lambda name, items: [name, *items], st.sampled_from(NAMES),
                st.lists(inner, max_size=4)),
    max_leaves=30,
)
VALID = sxp.parse(vm())[1:]


@given(values)
def test_only_bad_requests_come_out_of_anything(value: sxp.Value) -> None:
    assert_config_or_bad_request(value)


@given(st.lists(values, max_size=8), st.booleans())
def test_only_bad_requests_come_out_of_any_fields(fields: list[sxp.Value], first: bool) -> None:
    # Before the valid fields, random ones override them; after, they add devices and more.
    assert_config_or_bad_request(["vm", *fields, *VALID] if first else ["vm", *VALID, *fields])


def assert_config_or_bad_request(value: sxp.Value) -> None:
    """Any input yields a DomainConfig or a BadRequest: nothing else escapes."""
    try:
        config = parse_domain_config(value)
    except BadRequest:
        return
    assert isinstance(config, DomainConfig)
    assert parse_domain_config(config.sxpr) == config  # and what it stores reads back


@pytest.mark.parametrize(("text", "message"), [
    (vm(name="(name /x)"), f"invalid vm name '/x': {NAME_RULE}"),
    (vm(name="(name x/)"), f"invalid vm name 'x/': {NAME_RULE}"),
    (vm(name="(name a//b)"), f"invalid vm name 'a//b': {NAME_RULE}"),
    (vm(name="(name a/../b)"), f"invalid vm name 'a/../b': {NAME_RULE}"),
    (vm(name="(name .)"), f"invalid vm name '.': {NAME_RULE}"),
    (vm(name="(name ..)"), f"invalid vm name '..': {NAME_RULE}"),
    (vm("(maxmem 10)"), "invalid maxmem: 10 MB is less than the memory, 64 MB"),
    (vm(name="(name a_-.:+Z9)"), None),
    (vm(name="(name web/1)"), None),
    (vm(name="(name a./..b)"), None),
    (vm("(maxmem 64)"), None),
    (vm("(maxmem 128)"), None),
])
def test_a_new_domain_needs_a_name_urls_carry_and_maxmem_at_least_memory(
        text: str, message: str | None) -> None:
    parsed = parse_domain_config(sxp.parse(text))  # a stored record may have these
    if message is None:
        assert check_new_domain(parsed) is parsed
        return
    with pytest.raises(BadRequest) as error:
        check_new_domain(parsed)
    assert error.value.message == message
