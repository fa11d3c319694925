"""A qemu domain's state going out and coming in: save, restore and live migration.

The state is qemu's own migration stream. It leaves through QMP ``migrate fd:`` into
the write end of a pipe handed to qemu with ``getfd``, and comes in through
``migrate-incoming fd:`` from the read end of one; xend pumps the other end (into a
save file, from one, or over the relocation connection), so the stream always passes
xend: a dead xend at either end breaks it, and the relocation port's checks still hold.

Before the stream, a destination must make the same machine: the ``Machine`` (the
meta of a save file or a migration offer) says what the source was launched with and
the PCI slot of each hot-plugged device, so the devices xend plugs in again (through
the usual controllers, into a qemu launched with ``-incoming defer``) land where the
state expects them. The destination stays paused after loading (qemu runs with
``-S``) until xend says it may run.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xend_actors.errors import BadRequest, HypervisorError, Timeout, XendError
from xend_actors.hypervisor.base import LinuxImage, StreamProgress, StreamResult
from xend_actors.hypervisor.qemu import process
from xend_actors.hypervisor.qemu.guest import NIC_PREFIX, QemuGuest, mac_key
from xend_actors.hypervisor.qemu.qmp import Command

MIGRATE_FD = "xend-migrate"
UNLIMITED = 10 << 30  # bytes/s; qemu's own default of 128 MiB/s would slow a save
# The guest is stopped for the last part once qemu reckons it goes within the limit. At
# qemu's default (300 ms) that is at its first reckoning, a tenth of a second into the
# first pass, so most of the memory went while the guest was stopped; a tight limit lets
# the first pass finish live. A guest that dirties its memory faster than the tight
# limit allows gets the default after a few passes, so every migration ends.
DOWNTIME_LIMIT_MS = 20
DOWNTIME_LIMIT_LATER_MS = 300  # qemu's own default
TIGHT_PASSES = 3  # passes over the memory under the tight limit
STALL_TIMEOUT = 30.0  # the most a stream may go without a byte moving
POLL = 0.25  # between looks at query-migrate when qemu says nothing
META_VERSION = 1


@dataclass(frozen=True)
class Machine:
    """What a qemu domain was launched with, and where its hot-plugged devices sit."""

    memory_mb: int
    vcpus: int
    image: LinuxImage
    slots: tuple[tuple[str, int], ...]  # (slot key, PCI slot): QemuGuest.slots
    qemu: str

    def to_bytes(self) -> bytes:
        return json.dumps({
            "version": META_VERSION, "memory_mb": self.memory_mb, "vcpus": self.vcpus,
            "kernel": self.image.kernel, "ramdisk": self.image.ramdisk,
            "cmdline": self.image.cmdline, "slots": dict(self.slots), "qemu": self.qemu,
        }).encode()

    @classmethod
    def from_bytes(cls, meta: bytes) -> Machine:
        """The machine ``meta`` describes; BadRequest if it describes none."""
        try:
            data = json.loads(meta)
            if data["version"] != META_VERSION:
                raise ValueError(f"version {data['version']}, not {META_VERSION}")
            slots = tuple((str(k), int(v)) for k, v in dict(data["slots"]).items())
            return cls(int(data["memory_mb"]), int(data["vcpus"]),
                       LinuxImage(str(data["kernel"]), str(data["ramdisk"]),
                                  str(data["cmdline"])), slots, str(data["qemu"]))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise BadRequest(f"the saved machine description is not one: {error}") from None


def machine(guest: QemuGuest, qemu_version: str) -> Machine:
    """The machine of a running ``guest``."""
    st = guest.state
    if st.image is None or not st.built:
        raise HypervisorError(f"domain {guest.domid} has no running qemu to describe")
    slots = []
    for bus in guest.execute("query-pci"):
        for device in bus.get("devices", []):
            if qdev := str(device.get("qdev_id") or ""):
                slots.append((_slot_key(guest, qdev), int(device["slot"])))
    return Machine(st.memory_mb, st.vcpus, st.image, tuple(sorted(slots)), qemu_version)


def _slot_key(guest: QemuGuest, qdev: str) -> str:
    """How the destination will know device ``qdev``: a disk by its id (named after its
    vdevice), a nic by its MAC, since its id counts vifs and that count changes when an
    earlier vif is removed (the destination numbers them from its config)."""
    if not qdev.startswith(NIC_PREFIX):
        return qdev
    return mac_key(str(guest.execute("qom-get", {"path": f"/machine/peripheral/{qdev}",
                                                 "property": "mac"})))


def send(guest: QemuGuest, fd: int, *, live: bool, mbit: int,
         progress: Callable[[StreamProgress], None]) -> StreamResult:
    """Stream ``guest``'s state into ``fd``; returns once qemu says it is all out (the
    guest then stays stopped). On failure a guest that ran runs again."""
    was_running = not guest.is_paused()
    stopped_at: float | None = None
    try:
        if was_running and not live:
            guest.pause()
            stopped_at = time.monotonic()
        guest.migration_changed.clear()
        # One round trip, not four: the stream starts some milliseconds sooner.
        guest.execute_all([
            Command("migrate-set-capabilities", {"capabilities": [
                {"capability": "events", "state": True}]}),
            Command("migrate-set-parameters", {
                "max-bandwidth": mbit * 125_000 if mbit else UNLIMITED,
                "downtime-limit": DOWNTIME_LIMIT_MS}),
            Command("getfd", {"fdname": MIGRATE_FD}, fd),
            Command("migrate", {"uri": f"fd:{MIGRATE_FD}"})])
        info = _follow(guest, progress, loosen=live)
    except BaseException:
        if was_running:
            resume(guest)
        raise
    if stopped_at is None:  # it ran until qemu stopped it for the last part
        stopped_at = time.monotonic() - int(info.get("downtime", 0)) / 1000
    guest.state_sent = True  # its devices need no unplugging: it goes, or resumes as is
    return StreamResult(stopped_at, int(info.get("ram", {}).get("transferred", 0)))


def _follow(guest: QemuGuest, progress: Callable[[StreamProgress], None], *,
            loosen: bool) -> dict[str, Any]:
    """Watch the outgoing migration until it completes; its last query-migrate. When
    ``loosen``, the downtime limit goes up to qemu's default after ``TIGHT_PASSES``."""
    moved, moved_at = -1, time.monotonic()
    while True:
        guest.migration_changed.wait(POLL)
        guest.migration_changed.clear()
        info = guest.execute("query-migrate")
        status = info.get("status", "")
        ram = info.get("ram", {})
        sent = int(ram.get("transferred", 0))
        if loosen and status == "active" and int(ram.get("dirty-sync-count", 0)) > TIGHT_PASSES:
            loosen = False
            with contextlib.suppress(XendError):  # it may have ended meanwhile
                guest.execute("migrate-set-parameters",
                              {"downtime-limit": DOWNTIME_LIMIT_LATER_MS})
        progress(StreamProgress(guest.is_paused(), sent,
                                max(int(ram.get("total", 0)), sent + int(ram.get("remaining", 0)))))
        if status == "completed":
            return info
        if status in ("failed", "cancelled"):
            raise HypervisorError(f"qemu's migration of domain {guest.domid} {status}: "
                                  f"{info.get('error-desc', 'it did not say why')}")
        if sent != moved:
            moved, moved_at = sent, time.monotonic()
        elif time.monotonic() - moved_at > STALL_TIMEOUT:
            raise Timeout(f"the state of domain {guest.domid} stopped moving for "
                          f"{STALL_TIMEOUT:g} s")


def resume(guest: QemuGuest) -> None:
    """Let a guest stopped for a transfer that did not happen run again: its outgoing
    migration, if qemu still has one under way, is cancelled and waited for first. A
    xend killed mid-way leaves qemu writing into a pipe nobody reads, and the next xend
    comes to this before qemu has noticed: a ``cont`` then would be undone when the
    migration fails (qemu leaves a guest it found stopped in ``postmigrate``)."""
    with contextlib.suppress(XendError):
        if guest.execute("query-migrate").get("status") in ("setup", "active", "device",
                                                             "pre-switchover"):
            guest.execute("migrate_cancel")
            deadline = time.monotonic() + STALL_TIMEOUT
            while guest.execute("query-migrate").get("status") not in (
                    "cancelled", "failed", "completed"):
                if time.monotonic() > deadline:
                    break
                guest.migration_changed.wait(POLL)
                guest.migration_changed.clear()
    guest.state_sent = False
    if guest.is_paused() and guest.runs():
        guest.unpause()


def prepare(guest: QemuGuest, machine: Machine) -> None:
    """A freshly launched ``-incoming defer`` qemu, ready for ``receive`` (its monitor
    may not answer yet: nothing here waits for it)."""
    guest.slots = dict(machine.slots)


def receive(guest: QemuGuest, fd: int) -> None:
    """Start loading ``guest``'s state from ``fd``; qemu says how it goes in MIGRATION
    events (``wait_received``)."""
    guest.expect_migration()
    guest.execute_all([
        Command("migrate-set-capabilities", {"capabilities": [
            {"capability": "events", "state": True}]}),
        Command("getfd", {"fdname": MIGRATE_FD}, fd),
        Command("migrate-incoming", {"uri": f"fd:{MIGRATE_FD}"})])


def wait_received(guest: QemuGuest, timeout: float) -> None:
    """Wait until qemu has loaded the whole state (it then stays paused). qemu says so
    in a MIGRATION event; it is asked only when it says nothing for ``POLL`` s (a
    question put while it loads waits for the end anyway)."""
    deadline = time.monotonic() + timeout
    while True:
        said = guest.migration_changed.wait(POLL)
        guest.migration_changed.clear()
        status = guest.migration_status
        if not said or status in ("failed", "cancelled"):
            info = _incoming_status(guest)
            status = info.get("status", "")
            if status in ("failed", "cancelled"):
                raise HypervisorError(
                    f"qemu could not load the state of domain {guest.domid}: "
                    f"{info.get('error-desc') or process.log_tail(guest.paths)}")
        if status == "completed":
            return
        if time.monotonic() > deadline:
            raise Timeout(f"qemu did not finish loading the state of domain {guest.domid} "
                          f"within {timeout:g} s")


def _incoming_status(guest: QemuGuest) -> dict[str, Any]:
    try:
        info: dict[str, Any] = guest.execute("query-migrate")
    except XendError:
        raise HypervisorError(f"qemu could not load the state of domain {guest.domid}: "
                              f"{process.log_tail(guest.paths)}") from None
    return info
