"""A simulated guest: it boots, runs a tiny shell on its console and shuts down when asked.

The guest runs only while the hypervisor schedules it (built, unpaused, not shut
down). Work that arrives while it does not run — a control message, typed input,
the end of a shutdown delay, the rest of a flood — waits and is done once it runs
again, as a paused Xen guest leaves its rings alone. The guest reports its end
through ``on_exit``: the shutdown reason, or None for a crash.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import partial

from xend_actors.errors import BadRequest, Conflict
from xend_actors.hypervisor.base import LinuxImage, ShutdownReason
from xend_actors.hypervisor.ring.messages import Message, Shutdown, ShutdownSubtype
from xend_actors.hypervisor.sim.blkback import Disks
from xend_actors.hypervisor.sim.clock import Clock, Meter
from xend_actors.hypervisor.sim.console import Console
from xend_actors.hypervisor.sim.frontend import FRONTEND_MESSAGES, Frontends
from xend_actors.hypervisor.sim.memory import GuestMemory

IDLE_LOAD = 0.01  # cpu seconds per second of a guest that waits for input
BUSY_LOAD = 1.0
RING_SIZE = 8  # control messages a guest holds before the sender must wait (facts §9.1)
TYPEAHEAD_LIMIT = 64 * 1024
LINE_LIMIT = 4096
FLOOD_STEP = 64 * 1024  # the most one flood step writes before letting other guests run
PROMPT = b"# "

CR, LF, BS, DEL, CTRL_C = 0x0D, 0x0A, 0x08, 0x7F, 0x03
FLOOD_LINE = b"".join(bytes([0x21 + (i % 94)]) for i in range(78)) + b"\r\n"
FLOOD_TEXT = FLOOD_LINE * (FLOOD_STEP // len(FLOOD_LINE) + 2)

DISK_READ_LIMIT = 4096  # the most one ``disk read`` shows
SCREEN_LIMIT = 4096  # the console output a saved guest keeps, as a screen keeps its text
STATE_VERSION = 1
MAX_STATE = 64 * 1024
REQUESTS = {  # CMSG_SHUTDOWN subtype → what the guest reports, and what it says first
    ShutdownSubtype.POWEROFF: (ShutdownReason.POWEROFF,
                               "The system is going down for power off NOW!"),
    ShutdownSubtype.REBOOT: (ShutdownReason.REBOOT, "The system is going down for reboot NOW!"),
    ShutdownSubtype.SUSPEND: (ShutdownReason.SUSPEND,
                              "Suspending the system for save or migration."),
}
SYSRQ_KEYS = {  # key → shutdown reason (None = crash), and what the kernel says
    "b": (ShutdownReason.REBOOT, "SysRq : Resetting"),
    "o": (ShutdownReason.POWEROFF, "SysRq : Power Off"),
    "c": (None, "SysRq : Trigger a crash"),
}
SYSRQ_HELP = "SysRq : HELP : reBoot Crash powerOff"


class Phase(Enum):
    OFF = "off"  # not booted yet
    UP = "up"  # the shell runs
    GOING_DOWN = "going down"
    DOWN = "down"  # shut down, crashed or destroyed: it never runs again


class _ScreenConsole(Console):
    """The console, keeping the tail of what the guest wrote: its screen, which a saved
    guest takes along and shows again when it is restored."""

    def __init__(self, on_input: Callable[[bytes], None], on_write: Callable[[], None]) -> None:
        super().__init__(on_input)
        self.screen = bytearray()
        self._on_write = on_write

    def write(self, data: bytes) -> None:
        self._on_write()
        self.screen += data
        if len(self.screen) > SCREEN_LIMIT:
            del self.screen[:-SCREEN_LIMIT]
        super().write(data)


@dataclass(eq=False)
class _Flood:
    total: int
    sent: int = 0


class Guest:
    def __init__(self, domid: int, clock: Clock,
                 on_exit: Callable[[ShutdownReason | None], None], *,
                 shutdown_delay: float = 0.03, disks: Disks | None = None,
                 send: Callable[[Message], None] = lambda message: None,
                 transmit: Callable[[int, bytes], None] | None = None) -> None:
        self.domid = domid
        self.disks = disks
        self.frontends = Frontends(domid, send)
        self._transmit = transmit
        self.memory = GuestMemory(int.from_bytes(os.urandom(8), "big"))
        self.console = _ScreenConsole(self._on_input, lambda: self.memory.write())
        self.cpu = Meter(clock)
        self.uptime = Meter(clock)
        self.image: LinuxImage | None = None
        self._clock = clock
        self._on_exit = on_exit
        self._delay = shutdown_delay
        self._phase = Phase.OFF
        self._scheduled = False
        self._waiting: deque[Callable[[], None]] = deque()  # work for when it runs again
        self._inbox: deque[Shutdown] = deque()
        self._typeahead = bytearray()
        self._reading = False  # a read of the typeahead is due
        self._line = bytearray()
        self._after_cr = False
        self._flood: _Flood | None = None
        self._suspended = False  # it went down for a suspend
        self._uptime_before = 0.0  # uptime carried over from a saved guest
        self._saved_screen: bytes | None = None  # set when built from a saved state

    @property
    def busy(self) -> bool:
        """Whether it is using its cpu (flooding) rather than waiting for input."""
        return self._flood is not None and self._runs()

    # --- what the hypervisor does to it ---------------------------------------------

    def schedule(self, on: bool) -> None:
        """Run the guest's vcpu (unpaused) or stop it (paused, shut down)."""
        if on == self._scheduled:
            return
        self._scheduled = on
        if on and self._phase is Phase.OFF:
            if self._saved_screen is None:
                self._boot()
            else:
                self._wake()
        self._update_load()
        self._drain()

    def deliver(self, message: Message) -> Message:
        """A CMSG_SHUTDOWN request or a frontend message; acted on once the guest runs.
        Answers itself."""
        if isinstance(message, FRONTEND_MESSAGES):
            self._run(partial(self.frontends.receive, message))
            return message
        if not isinstance(message, Shutdown):
            raise BadRequest(f"domain {self.domid} takes no control message of type "
                             f"{int(message.type)}")
        if len(self._inbox) >= RING_SIZE:
            raise Conflict(f"the control ring of domain {self.domid} is full: "
                           "it has not read the last requests")
        self._inbox.append(message)
        self._run(self._read_message)
        return message

    # --- save and restore: the guest's state, beyond the domain's memory ----------------

    @property
    def suspended(self) -> bool:
        return self._phase is Phase.DOWN and self._suspended

    def export_state(self) -> bytes:
        """The state of the suspended guest: image, uptime, screen and memory map (JSON)."""
        assert self.image is not None
        return json.dumps({
            "version": STATE_VERSION,
            "kernel": self.image.kernel, "ramdisk": self.image.ramdisk,
            "cmdline": self.image.cmdline,
            "uptime": self._uptime_before + self.uptime.value(),
            "screen": base64.b64encode(bytes(self.console.screen)).decode(),
            "memory": self.memory.export(),
        }).encode()

    def load_state(self, state: bytes) -> None:
        """Become the guest saved in ``state`` (instead of booting an image)."""
        if len(state) > MAX_STATE:
            raise BadRequest(f"a saved sim guest state is at most {MAX_STATE} bytes, "
                             f"got {len(state)}")
        try:
            saved = json.loads(state)
            if saved["version"] != STATE_VERSION:
                raise BadRequest(f"saved sim guest state version {saved['version']} is not "
                                 f"{STATE_VERSION}")
            image = LinuxImage(str(saved["kernel"]), str(saved["ramdisk"]),
                               str(saved["cmdline"]))
            uptime = float(saved["uptime"])
            screen = base64.b64decode(saved["screen"], validate=True)
            # Saved before guests had a memory map: a fresh one will do.
            memory = GuestMemory.load(saved["memory"]) if "memory" in saved else self.memory
        except (ValueError, KeyError, TypeError) as error:
            raise BadRequest(f"not a saved sim guest state: {error}") from None
        self.image = image
        self._uptime_before = uptime
        self._saved_screen = screen[-SCREEN_LIMIT:]
        self.memory = memory

    def resume(self) -> None:
        """Undo a suspend that was not followed by a save: the guest runs on."""
        if not self.suspended:
            raise Conflict(f"domain {self.domid} is not suspended")
        self._suspended = False
        self._phase = Phase.UP
        self._write_lines("Resumed: the suspend was cancelled.")
        self.console.write(PROMPT)

    def kill(self) -> None:
        """The domain is destroyed: stop everything and close the console."""
        self._phase = Phase.DOWN
        self._scheduled = False
        self._flood = None
        self._waiting.clear()
        self._update_load()
        self.console.close()

    # --- running -------------------------------------------------------------------

    def _runs(self) -> bool:
        return self._scheduled and self._phase in (Phase.UP, Phase.GOING_DOWN)

    def _run(self, work: Callable[[], None]) -> None:
        if self._runs() and not self._waiting:
            work()
        else:
            self._waiting.append(work)

    def _drain(self) -> None:
        while self._waiting and self._runs():
            self._waiting.popleft()()

    def _update_load(self) -> None:
        runs = self._runs()
        self.cpu.set_rate((BUSY_LOAD if self._flood is not None else IDLE_LOAD) if runs else 0.0)
        self.uptime.set_rate(1.0 if runs else 0.0)

    def _boot(self) -> None:
        image = self.image
        assert image is not None, "the hypervisor runs only built guests"
        self._phase = Phase.UP
        self._write_lines(
            f"Booting simulated Linux on xend-simhv (domain {self.domid})",
            f"Kernel: {image.kernel}",
            f"Ramdisk: {image.ramdisk or '(none)'}",
            f"Kernel command line: {image.cmdline}",
            "Xen virtual console successfully installed as xvc0",
            "Commands: echo, uptime, poweroff, reboot, halt, crash, flood BYTES, lsblk,",
            "  disk VDEV read OFFSET LENGTH, disk VDEV write OFFSET TEXT, ifconfig,",
            "  udp ETH SRC-IP DST-IP PORT TEXT",
        )
        self.console.write(PROMPT)
        self.frontends.boot()

    def _wake(self) -> None:
        """Run again as the saved guest: its screen back, its frontends reconnecting."""
        self._phase = Phase.UP
        screen, self._saved_screen = self._saved_screen or b"", None
        self.console.write(screen)
        self._write_lines("", f"Restored from a saved state (now domain {self.domid})")
        self.console.write(PROMPT)
        self.frontends.boot()

    def _going_down(self, reason: ShutdownReason | None, message: str) -> None:
        """Say ``message`` and, after the shutdown delay, exit with ``reason``."""
        if self._phase is not Phase.UP:
            return
        self._phase = Phase.GOING_DOWN
        self._flood = None
        self._typeahead.clear()
        self._write_lines(message)
        self._update_load()
        self._clock.call_later(self._delay, lambda: self._run(partial(self._exit, reason)))

    def _exit(self, reason: ShutdownReason | None) -> None:
        if self._phase is Phase.DOWN:
            return
        self._phase = Phase.DOWN
        self._suspended = reason is ShutdownReason.SUSPEND
        self._flood = None
        self._update_load()
        self._on_exit(reason)

    def _read_message(self) -> None:
        message = self._inbox.popleft()
        if self._phase is not Phase.UP:
            return
        if message.reason in REQUESTS:
            self._going_down(*REQUESTS[message.reason])
            return
        key = message.key or ""
        if key in SYSRQ_KEYS:
            self._going_down(*SYSRQ_KEYS[key])
        else:
            self._write_lines(SYSRQ_HELP)

    # --- the console and its shell ---------------------------------------------------

    def _write_lines(self, *lines: str) -> None:
        self.console.write("".join(f"{line}\r\n" for line in lines).encode())

    def _reply(self, text: str) -> None:
        self._write_lines(text)
        self.console.write(PROMPT)

    def _on_input(self, data: bytes) -> None:
        self.memory.write()
        self._typeahead += data[: max(0, TYPEAHEAD_LIMIT - len(self._typeahead))]
        if not self._reading:
            self._reading = True
            self._run(self._read_typeahead)

    def _read_typeahead(self) -> None:
        """Take typed bytes as a terminal does: echo them, run a line on CR or LF."""
        self._reading = False
        data, self._typeahead = self._typeahead, bytearray()
        if self._flood is not None:
            if CTRL_C not in data:  # kept until the flood ends
                self._typeahead = data
                return
            self._end_flood(interrupted=True)
        echo = bytearray()
        for at, byte in enumerate(data):
            if self._phase is not Phase.UP:
                return
            if self._flood is not None:  # the rest waits for the flood to end
                self._typeahead[:0] = data[at:]
                break
            line = self._key(byte, echo)
            if line is not None:
                self.console.write(bytes(echo))
                echo.clear()
                self._run_line(line.decode(errors="replace"))
        if echo:
            self.console.write(bytes(echo))

    def _key(self, byte: int, echo: bytearray) -> bytes | None:
        """One typed byte; returns the line when it completes one."""
        after_cr, self._after_cr = self._after_cr, byte == CR
        if byte in (CR, LF):
            if byte == LF and after_cr:  # the LF of a CR LF pair
                return None
            echo += b"\r\n"
            line, self._line = bytes(self._line), bytearray()
            return line
        if byte in (BS, DEL):
            if self._line:
                self._line.pop()
                echo += b"\b \b"
        elif byte == CTRL_C:
            self._line.clear()
            echo += b"^C\r\n" + PROMPT
        elif byte >= 0x20 and len(self._line) < LINE_LIMIT:
            self._line.append(byte)
            echo.append(byte)
        return None

    def _run_line(self, line: str) -> None:
        words = line.split()
        if not words:
            self.console.write(PROMPT)
            return
        command = SHELL_COMMANDS.get(words[0])
        if command is None:
            self._reply(f"sh: {words[0]}: not found")
        else:
            command(self, words[1:])

    def _echo(self, args: list[str]) -> None:
        self._reply(" ".join(args))

    def _uptime(self, _args: list[str]) -> None:
        self._reply(f"up {self._uptime_before + self.uptime.value():.2f} seconds")

    def _poweroff(self, _args: list[str]) -> None:
        self._going_down(ShutdownReason.POWEROFF, "The system is going down for power off NOW!")

    def _halt(self, _args: list[str]) -> None:
        self._going_down(ShutdownReason.POWEROFF, "The system is going down for system halt NOW!")

    def _reboot(self, _args: list[str]) -> None:
        self._going_down(ShutdownReason.REBOOT, "The system is going down for reboot NOW!")

    def _crash(self, _args: list[str]) -> None:
        self._write_lines("Kernel panic - not syncing: crash requested from the shell")
        self._exit(None)

    # --- disks: the vbds the block backend gives this domain -----------------------------

    def _lsblk(self, _args: list[str]) -> None:
        vbds = self.disks.list() if self.disks is not None else []
        rows = [f"{'VDEV':<8}{'SECTORS':>12}{'BYTES':>14} MODE"]
        rows += [f"{v.vdevice:#06x}  {v.sectors:>12}{v.size:>14} {'ro' if v.readonly else 'rw'}"
                 for v in vbds]
        self._reply("\r\n".join(rows))

    def _disk(self, args: list[str]) -> None:
        usage = "usage: disk VDEV read OFFSET LENGTH | disk VDEV write OFFSET TEXT"
        if len(args) < 3 or args[1] not in ("read", "write"):
            self._reply(usage)
            return
        try:
            vdevice, offset = int(args[0], 0), int(args[2], 0)
            length = int(args[3], 0) if args[1] == "read" and len(args) == 4 else None
        except (ValueError, IndexError):
            self._reply(usage)
            return
        if (args[1] == "read" and length is None) or (args[1] == "write" and len(args) < 4):
            self._reply(usage)
            return
        try:
            if self.disks is None:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
            if length is not None:
                data = self.disks.read(vdevice, offset, min(length, DISK_READ_LIMIT))
                self._reply("".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data))
            else:
                text = " ".join(args[3:]).encode()
                self.disks.write(vdevice, offset, text)
                self._reply(f"wrote {len(text)} bytes at {offset}")
        except OSError as e:
            self._reply(f"disk: {args[1]} error: {e.strerror}")

    def _ifconfig(self, _args: list[str]) -> None:
        rows = [f"eth{i.handle}  HWaddr {i.mac}  {i.status.name.lower()}  evtchn {i.evtchn}"
                for _, i in sorted(self.frontends.net.items())]
        self._reply("\r\n".join(rows) or "no network interfaces")

    def _udp(self, args: list[str]) -> None:
        """``udp ETH SRC DST PORT TEXT``: send one UDP datagram from ethETH, any source."""
        usage = "usage: udp ETH SRC-IP DST-IP PORT TEXT"
        try:
            handle, port = int(args[0]), int(args[3])
            nic = self.frontends.net[handle]
            frame = udp_frame(nic.mac, args[1], args[2], port, " ".join(args[4:]).encode())
        except (ValueError, IndexError, OSError):
            self._reply(usage)
            return
        except KeyError:
            self._reply(f"udp: no eth{args[0]}")
            return
        try:
            if self._transmit is None:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
            self._transmit(handle, frame)
        except OSError as e:
            self._reply(f"udp: send error: {e.strerror}")
            return
        self._reply(f"sent {len(frame)} bytes")

    # --- flood: output as fast as the console takes it -----------------------------------

    def _flood_command(self, args: list[str]) -> None:
        if len(args) != 1 or not args[0].isdigit():
            self._reply("usage: flood BYTES")
            return
        self._flood = _Flood(int(args[0]))
        self._update_load()
        self._flood_step(self._flood)

    def _flood_step(self, flood: _Flood) -> None:
        if flood is not self._flood:  # interrupted, or the guest went down
            return
        budget = FLOOD_STEP
        while flood.sent < flood.total and budget > 0 and self.console.ready():
            start = flood.sent % len(FLOOD_LINE)
            size = min(flood.total - flood.sent, budget)
            self.console.write(FLOOD_TEXT[start:start + size])
            flood.sent += size
            budget -= size
        next_step = partial(self._run, partial(self._flood_step, flood))
        if flood.sent >= flood.total:
            self._end_flood(interrupted=False)
        elif self.console.ready():
            self._clock.call_later(0, next_step)
        else:
            self.console.when_ready(next_step)

    def _end_flood(self, *, interrupted: bool) -> None:
        flood, self._flood = self._flood, None
        self._update_load()
        mid_line = flood is not None and flood.sent % len(FLOOD_LINE) != 0
        # An interrupted flood's prompt comes from the echo of its ^C.
        self.console.write((b"\r\n" if mid_line else b"") + (b"" if interrupted else PROMPT))
        if self._typeahead and not self._reading:
            self._reading = True
            self._run(self._read_typeahead)


SHELL_COMMANDS: dict[str, Callable[[Guest, list[str]], None]] = {
    "echo": Guest._echo,
    "uptime": Guest._uptime,
    "poweroff": Guest._poweroff,
    "halt": Guest._halt,
    "reboot": Guest._reboot,
    "crash": Guest._crash,
    "flood": Guest._flood_command,
    "lsblk": Guest._lsblk,
    "disk": Guest._disk,
    "ifconfig": Guest._ifconfig,
    "udp": Guest._udp,
}


def udp_frame(mac: str, src: str, dst: str, port: int, payload: bytes) -> bytes:
    """An Ethernet broadcast frame carrying one IPv4 UDP datagram (no UDP checksum)."""
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    words = struct.unpack("!10H", header)
    total = sum(words)
    total = (total >> 16) + (total & 0xFFFF)
    checksum = ~(total + (total >> 16)) & 0xFFFF
    header = header[:10] + struct.pack("!H", checksum) + header[12:]
    return b"\xff" * 6 + bytes.fromhex(mac.replace(":", "")) + b"\x08\x00" + header + udp
