"""xm create's config files and VAR=VAL into (vm ...) (xend-facts.md §14.3, §5.4, §5.5)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from xend_actors import sxp
from xend_actors.domain.config import parse_domain_config
from xend_actors.errors import BadRequest
from xend_actors.xm.configfile import CreateOptions, build_vm_sxpr, find_config_file

EXAMPLES = Path(__file__).parents[1] / "data" / "reference-examples"
SHIPPED = Path(__file__).resolve().parents[2] / "etc" / "examples"
RANDOM_MAC = re.compile(r"aa:00:00:[0-7][0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2}")
FIXED_MAC = "aa:00:00:00:00:00"


def build(tmp_path: Path, script: str, *assignments: str, name: str = "dom.xm") -> sxp.Value:
    (tmp_path / name).write_text(script)
    return build_vm_sxpr(CreateOptions(defconfig=str(tmp_path / name), assignments=assignments))


def image(vm: sxp.Value) -> sxp.Value:
    return sxp.child_value(vm, "image")


def vifs(vm: sxp.Value) -> list[sxp.Value]:
    return [sxp.child0(device) for device in sxp.children(vm, "device")
            if sxp.name(sxp.child0(device)) == "vif"]


def macs(vm: sxp.Value) -> list[str]:
    return [sxp.child_value(vif, "mac") for vif in vifs(vm)]


def with_fixed_macs(text: str) -> str:
    return re.sub(r"\(mac [0-9a-f:]+\)", f"(mac {FIXED_MAC})", text)


MINIMAL = 'kernel = "/boot/vmlinuz"\n'


@pytest.mark.parametrize(("script", "assignments", "expected"), [
    ("ttylinux.xm", (), "ttylinux.expected.sxp"),
    ("xmexample1", (), "xmexample1.expected.sxp"),
    ("xmexample2", ("vmid=3",), "xmexample2-vmid3.expected.sxp"),
])
def test_examples_give_what_xm_2_0_0_printed(
    script: str, assignments: tuple[str, ...], expected: str
) -> None:
    vm = build_vm_sxpr(CreateOptions(defconfig=script, path=str(SHIPPED), assignments=assignments))
    assert all(RANDOM_MAC.fullmatch(mac) for mac in macs(vm))
    original = sxp.parse((EXAMPLES / expected).read_text())
    assert with_fixed_macs(sxp.pretty(vm)) == with_fixed_macs(sxp.pretty(original))
    parse_domain_config(vm)


def test_example_ttylinux_matches_the_reference_variables() -> None:
    def variables(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines() if line and line[0] != "#"]

    assert variables(SHIPPED / "ttylinux.xm") == variables(EXAMPLES / "ttylinux.xm")


def test_every_run_draws_new_macs() -> None:
    options = CreateOptions(defconfig="xmexample1", path=str(SHIPPED))
    assert len({macs(build_vm_sxpr(options))[0] for _ in range(20)}) > 1


def test_sxp_config_file_is_used_as_is(tmp_path: Path) -> None:
    config = tmp_path / "d.sxp"
    config.write_text("# mine\n(vm (name d) (memory 32) (image (linux (kernel k))))\n")
    options = CreateOptions(defconfig="no-such-file", config=config, assignments=("memory=64",))
    assert build_vm_sxpr(options) == ["vm", ["name", "d"], ["memory", "32"],
                                      ["image", ["linux", ["kernel", "k"]]]]


def test_sxp_config_file_errors(tmp_path: Path) -> None:
    config = tmp_path / "d.sxp"
    with pytest.raises(BadRequest,
                       match=f"^Unable to open config file: {config}: No such file or directory$"):
        build_vm_sxpr(CreateOptions(config=config))
    config.write_text("(vm\n (name d)\n")
    with pytest.raises(BadRequest, match=rf"^Error in config file {config} line 3, .*EOF"):
        build_vm_sxpr(CreateOptions(config=config))


def test_command_line_wins_over_the_script(tmp_path: Path) -> None:
    script = MINIMAL + 'extra = "saw " + memory\nmemory = 32\nname = "x"\ndisk = ["phy:a,a,r"]\n'
    vm = build(tmp_path, script,
               "memory=64", "name=cli", "disk=phy:b,b,w", "disk=phy:c,c,r")
    assert sxp.child_value(vm, "memory") == "64"
    assert sxp.child_value(vm, "name") == "cli"
    assert [sxp.child_value(sxp.child0(d), "uname") for d in sxp.children(vm, "device")][:2] == [
        "phy:b", "phy:c"
    ]
    assert sxp.child_value(image(vm), "args") == "saw 64", "the script sees the command line"


def test_command_line_numbers_become_numbers(tmp_path: Path) -> None:
    vm = build(tmp_path, MINIMAL, "memory=64", "maxmem=128", "cpu=1", "cpu_weight=0.5",
               "console=9700", "restart=never", "blkif=yes", "netif=yes")
    assert sxp.show(vm[1:10]) == (
        "((name dom.xm) (memory 64) (maxmem 128) (cpu 1) (cpu_weight 0.5) (backend (blkif))"
        " (backend (netif)) (restart never) (console 9700))"
    )
    assert parse_domain_config(vm).memory_mb == 64


DISK_FORM = "expected TYPE:DEV,VDEV,MODE[,DOM] (phy:hda1,hda1,w)"
PCI_FORM = "expected BUS,DEV,FUNC in hex (c0,02,1a)"
VIF_FORM = "expected KEY=VALUE,... with keys mac, bridge, script, backend, ip, vifname"


@pytest.mark.parametrize(("assignment", "message"), [
    ("memory=lots", "Invalid value for memory: 'lots': expected a whole number"),
    ("nics=", "Invalid value for nics: '': expected a whole number"),
    ("cpu_weight=heavy", "Invalid value for cpu_weight: 'heavy': expected a number"),
    ("blkif=maybe", "Invalid value for blkif: 'maybe': expected yes or no"),
    ("disk=phy:sda1,sda1", f"Invalid disk specifier: phy:sda1,sda1: {DISK_FORM}"),
    ("disk=phy:sda1,sda1,w,0,9", f"Invalid disk specifier: phy:sda1,sda1,w,0,9: {DISK_FORM}"),
    ("pci=1,2", f"Invalid pci specifier: 1,2: {PCI_FORM}"),
    ("pci=1,2,z", f"Invalid pci specifier: 1,2,z: {PCI_FORM}"),
    ("vif=colour=red", f"Invalid vif specifier: colour=red: {VIF_FORM}"),
    ("vif=aa:00:00:00:00:01", f"Invalid vif specifier: aa:00:00:00:00:01: {VIF_FORM}"),
    ("nfs_root=/export/d", "Must set nfs root and nfs server: nfs_root needs nfs_server "
                           "(the NFS server's address)"),
    ("=3", "Invalid variable assignment: =3: expected VAR=VAL, VAR a Python name "
           "(letters, digits, '_', not starting with a digit)"),
])
def test_bad_values(tmp_path: Path, assignment: str, message: str) -> None:
    with pytest.raises(BadRequest) as error:
        build(tmp_path, MINIMAL, assignment)
    assert error.value.message == message


def test_script_values_are_converted_too(tmp_path: Path) -> None:
    vm = build(tmp_path, MINIMAL + 'memory = "48"\ncpu_weight = 2\nblkif = 1\ndisk = "phy:a,a,r"\n')
    assert sxp.child_value(vm, "memory") == "48"
    assert sxp.child_value(vm, "cpu_weight") == "2.0"
    assert sxp.child(vm, "backend") == ["backend", ["blkif"]]
    assert sxp.child(vm, "device") == ["device", ["vbd", ["uname", "phy:a"], ["dev", "a"],
                                                 ["mode", "r"]]]


def test_only_plain_script_values_are_taken(tmp_path: Path) -> None:
    vm = build(tmp_path, MINIMAL + 'memory = 48\nname = ("a",)\ndef root(): pass\n')
    assert sxp.child_value(vm, "name") == "dom.xm"
    assert sxp.child(image(vm), "root") is None


def test_defaults_and_name_from_the_file_name(tmp_path: Path) -> None:
    vm = build(tmp_path, MINIMAL, name="web1")
    assert vm[:3] == ["vm", ["name", "web1"], ["memory", "128"]]
    assert image(vm) == ["linux", ["kernel", "/boot/vmlinuz"]]
    assert len(vifs(vm)) == 1


def test_no_kernel(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match=r"^No kernel specified: set kernel = "
                       r"'/path/to/vmlinuz' in the config file, or give kernel=FILE$"):
        build(tmp_path, "memory = 64\n")


def test_kernel_and_ramdisk_are_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    vm = build(tmp_path, 'kernel = "k"\nramdisk = "../r"\n')
    assert sxp.child_value(image(vm), "kernel") == str(tmp_path / "k")
    assert sxp.child_value(image(vm), "ramdisk") == os.path.abspath(tmp_path / ".." / "r")


def test_disk_with_backend_domain(tmp_path: Path) -> None:
    vm = build(tmp_path, MINIMAL + "disk = ['phy:sda7,sda1,w!,2', 'file:/i/a.img,hda1,r']\n")
    vbds = [sxp.child0(device) for device in sxp.children(vm, "device")][:2]
    assert sxp.show(vbds) == (
        "((vbd (uname phy:sda7) (dev sda1) (mode 'w!') (backend 2))"
        " (vbd (uname file:/i/a.img) (dev hda1) (mode r)))"
    )
    assert parse_domain_config(vm).devices[0].backend == 2


def test_devices_in_order_vbd_pci_vif(tmp_path: Path) -> None:
    script = MINIMAL + "vif = ['bridge=br1']\npci = ['c0,02,1a']\ndisk = ['phy:a,a,r']\n"
    vm = build(tmp_path, script)
    kinds = [sxp.name(sxp.child0(device)) for device in sxp.children(vm, "device")]
    assert kinds == ["vbd", "pci", "vif"]
    assert sxp.child(vm, "device")[1] == ["vbd", ["uname", "phy:a"], ["dev", "a"], ["mode", "r"]]
    assert sxp.children(vm, "device")[1] == [
        "device", ["pci", ["bus", "0xc0"], ["dev", "0x02"], ["func", "0x1a"]]
    ]


def test_nics_two_gives_two_vifs_with_distinct_random_macs(tmp_path: Path) -> None:
    vm = build(tmp_path, MINIMAL + "nics = 2\n")
    assert len(vifs(vm)) == 2
    assert all(RANDOM_MAC.fullmatch(mac) for mac in macs(vm))
    assert len(set(macs(vm))) == 2


def test_vif_entries_beyond_nics_and_without_mac(tmp_path: Path) -> None:
    vm = build(tmp_path, MINIMAL + "nics = 0\nvif = ['mac=aa:00:00:00:00:11, bridge=xen-br0',"
               " 'script=vif-route, backend=1, ip=10.0.0.2 10.0.1.0/24, vifname=vifweb']\n")
    first, second = vifs(vm)
    assert first == ["vif", ["mac", "aa:00:00:00:00:11"], ["bridge", "xen-br0"]]
    assert RANDOM_MAC.fullmatch(sxp.child_value(second, "mac"))
    assert second[2:] == [["script", "vif-route"], ["backend", "1"], ["ip", "10.0.0.2"],
                          ["ip", "10.0.1.0/24"], ["vifname", "vifweb"]]
    parse_domain_config(vm)


def test_vif_list_shorter_than_nics_is_filled_up(tmp_path: Path) -> None:
    vm = build(tmp_path, MINIMAL + "nics = 3\nvif = ['mac=aa:00:00:00:00:11']\n")
    assert macs(vm)[0] == "aa:00:00:00:00:11"
    assert len(vifs(vm)) == 3


@pytest.mark.parametrize(("assignments", "ip"), [
    ((), None),
    (("ip=10.0.0.2",), "10.0.0.2:1.2.3.4::::eth0:off"),
    (("dhcp=dhcp",), ":1.2.3.4::::eth0:dhcp"),
    (("ip=10.0.0.2", "nfs_server=10.0.0.1", "gateway=10.0.0.254", "netmask=255.255.255.0",
      "hostname=web", "interface=eth1"), "10.0.0.2:10.0.0.1:10.0.0.254:255.255.255.0:web:eth1:off"),
    (("ip=ip=10.0.0.2",), "10.0.0.2:1.2.3.4::::eth0:off"),
])
def test_ip_rule(tmp_path: Path, assignments: tuple[str, ...], ip: str | None) -> None:
    vm = build(tmp_path, MINIMAL, *assignments)
    assert sxp.child_value(image(vm), "ip") == ip


def test_nfs_root_rule(tmp_path: Path) -> None:
    vm = build(tmp_path, MINIMAL, "root=root=/dev/nfs", "nfs_server=10.0.0.1",
               "nfs_root=/export/d", "extra=4", "dhcp=dhcp")
    assert image(vm)[2:] == [["ip", ":10.0.0.1::::eth0:dhcp"], ["root", "/dev/nfs"],
                             ["args", "nfsroot=10.0.0.1:/export/d 4"]]
    assert parse_domain_config(vm).image.cmdline == (
        " ip=:10.0.0.1::::eth0:dhcp root=/dev/nfs nfsroot=10.0.0.1:/export/d 4"
    )
    vm = build(tmp_path, MINIMAL, "nfs_server=10.0.0.1", "nfs_root=/export/d")
    assert sxp.child_value(image(vm), "args") == "nfsroot=10.0.0.1:/export/d"


def test_script_sees_sys_os_and_its_own_file(tmp_path: Path) -> None:
    vm = build(tmp_path, MINIMAL + "extra = os.path.basename(xm_file) + ' ' + sys.platform\n")
    assert sxp.child_value(image(vm), "args") == f"dom.xm {sys.platform}"


def test_script_syntax_error_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BadRequest) as error:
        build(tmp_path, MINIMAL + "memory = = 64\n")
    path = tmp_path / "dom.xm"
    assert error.value.message == f"Error in config file {path} line 2: invalid syntax"


def test_script_runtime_error_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BadRequest) as error:
        build(tmp_path, MINIMAL + "\n\nname = 'VM%d' % vmid\n")
    path = tmp_path / "dom.xm"
    assert error.value.message == (
        f"Error in config file {path} line 4: NameError: name 'vmid' is not defined"
    )


VMID_USE = "(Virtual machine id. Integer greater than 0.)"


@pytest.mark.parametrize(("assignments", "message"), [
    ((), f"Missing variable vmid: give vmid=VALUE {VMID_USE}"),
    (("vmid=0",), f"Invalid value for vmid: 0 {VMID_USE}"),
    (("vmid=three",), f"Invalid value for vmid: three {VMID_USE}"),
])
def test_xm_vars_check_failure(assignments: tuple[str, ...], message: str) -> None:
    options = CreateOptions(defconfig="xmexample2", path=str(SHIPPED), assignments=assignments)
    with pytest.raises(BadRequest) as error:
        build_vm_sxpr(options)
    assert error.value.message == message


def test_xm_vars_check_may_give_a_default(tmp_path: Path) -> None:
    script = ("xm_vars.var('n', check=lambda var, val: int(val or 5))\nxm_vars.check()\n"
              + MINIMAL + "memory = 16 * n\n")
    assert sxp.child_value(build(tmp_path, script), "memory") == "80"
    assert sxp.child_value(build(tmp_path, script, "n=2"), "memory") == "32"


def test_find_config_file_along_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (second / "vm1").write_text(MINIMAL)
    (second / "vm2").write_text(MINIMAL)
    (first / "vm2").write_text(MINIMAL)
    (first / "vm3").mkdir()
    path = f"{first}:{second}"
    assert find_config_file("vm1", path) == second / "vm1"
    assert find_config_file("vm2", path) == first / "vm2"
    assert find_config_file(str(second / "vm2"), str(first)) == second / "vm2"
    monkeypatch.chdir(second)
    assert find_config_file("vm1", ".:/etc/xen").resolve() == second / "vm1"
    for name in ("vm3", "vm4"):
        with pytest.raises(BadRequest) as error:
            find_config_file(name, path)
        assert error.value.message == (f"Unable to open config file: {name}: not in "
                                       f"{first}, {second} (give --path DIR:DIR)")
    with pytest.raises(BadRequest) as error:
        find_config_file(str(first / "vm1"), path)
    assert error.value.message == f"Unable to open config file: {first / 'vm1'}: no such file"


def test_defconfig_is_found_along_the_path(tmp_path: Path) -> None:
    (tmp_path / "xmdefconfig").write_text(MINIMAL + "memory = 32\n")
    vm = build_vm_sxpr(CreateOptions(path=f"/nonexistent:{tmp_path}"))
    assert vm[1:3] == [["name", "xmdefconfig"], ["memory", "32"]]
