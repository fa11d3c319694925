"""A torture run: clients, kills and a full disk against two xends, checked round by round.

Two xends (sim driver) run on 127.0.0.1, each a relocation server for the other
(``(xend-relocation-tls no)``). K client threads run random operations on M domain names
(create with a vif and a vbd, pause, unpause, shutdown, reboot, destroy, save, restore,
migrate to the other xend, hot-plug of a vbd and a vif, a console poke), each over a
transport picked at random: HTTP on the admin Unix socket (keep-alive), HTTP over TCP
with an admin token (a new connection each time), or an ``xm`` subprocess. A long-poll
per xend reads its events. Meanwhile xend is ``kill -9``-ed and started again every
``--kill-every`` seconds (every 1-3 s in storm rounds), a xend-simhv is killed now and
then, and in disk-full rounds the first xend's dbroot (a 4 MiB tmpfs) is filled with a
file, then freed.

Each round ends quiet (clients and killers stopped, both xends running, the disk freed)
and is checked:

* every acknowledged operation is reflected: a created, restored, rebooted or migrated
  domain exists where it should (or its death was published), a destroyed,
  saved or migrated one is gone from where it was, a saved file exists, a hot-plugged
  vbd is listed;
* the store (``dbroot/domain/*``) matches xend's list and the hypervisor's (xend-simhv's
  own list, asked over its socket);
* no orphan: one xend-simhv per xend, no listening console port without its domain, no
  temporary file left by a save, no transfer session (``dbroot/migrate/``) and no
  create intent (``dbroot/intent/``);
* event numbers have no gap or repeat, as the long-polls saw them and in the log;
* no two domains share a name (in one xend or across both) and none is nameless
  (``Domain-NNN`` other than ``Domain-0``);
* xend's RSS, threads and open files stay flat across rounds;
* a reply 500 that is not a failure of the xend's own hypervisor (README keeps 500
  for those), or a request that hangs past its timeout, is a violation too.

It prints rounds, operations, restarts survived and every violation (grouped by kind, with
examples); exit status 1 if any. ``--seed`` fixes what each client and killer chooses;
the interleaving is the machine's. Not checked with the sim: taps and bridge ports (it
makes none here, ``(sim-taps no)``).

With ``--qemu`` the hypervisor is xend's qemu driver with real TCG guests, each xend in
a network namespace of its own; a guest's qemu is ``kill -9``-ed instead of xend-simhv,
a client may set a cpu weight (a cgroup), and the checks add orphan qemus, run-dir
folders, taps, bridge ports and cgroups (``bench/torture_hv.py`` says what "the
hypervisor" is for each).

    python bench/torture.py --minutes 10 --clients 6 --domains 8 --seed 15
    python bench/torture.py --qemu --minutes 10 --clients 3 --domains 4 --round-seconds 60
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from common import proc_status, sxp
from torture_hv import Hypervisor, QemuHv, SimHv

from tests.support.home import XendHome
from tests.support.ports import CONSOLE_SPAN, free_port
from tests.support.processes import process_gone, wait_for, wait_gone
from tests.support.xend import XM

OP_TIMEOUT = 60.0  # a request not answered in this long hangs: a violation
SETTLE = 30.0  # how long a quiet xend may take to reach what its acknowledged ops said
DISK_MB = 4
DEATHS = ("xend.domain.died", "xend.domain.exit", "xend.domain.destroy")
NAMELESS = re.compile(r"Domain-\d+")
HV_FAILURE_WORDS = ["xend-simhv", "Domain died"]  # --qemu adds its own
HV_KILLED: dict[str, float] = {}  # a site's label → when the run last killed a hypervisor piece


# --- what the run found ---------------------------------------------------------------------


class Ledger:
    """Counters and violations, shared by every thread of the run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.violations: list[str] = []
        self.round = 0

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def violation(self, text: str) -> None:
        if not text.startswith("round "):
            text = f"round {self.round}: {text}"
        with self.lock:
            self.violations.append(text)
            first = self.kinds()[kind_of(text)] == 1
        if first:
            print(f"  VIOLATION {text}", flush=True)

    def kinds(self) -> collections.Counter[str]:
        """The violations by kind: their text with names, numbers and paths blanked."""
        return collections.Counter(kind_of(text) for text in self.violations)


def kind_of(text: str) -> str:
    text = re.sub(r"^round \d+: |\[[ab]\] ", "", text.partition("; last ops:")[0])
    text = re.sub(r"^\w+ tt-\d+ over \w+ answered", "a request answered", text)
    text = re.sub(r"^xm \w+ tt-\d+:", "xm:", text)
    return re.sub(r"tt-\d+|/tmp/[^\s')]+|\d+(\.\d+)?", "#", text)


# --- a xend under torture -------------------------------------------------------------------


class Site:
    """One xend of the two: its home, a lock around kills and starts, its events."""

    def __init__(self, label: str, home: XendHome, relocation_port: int, ledger: Ledger,
                 address: str = "127.0.0.1") -> None:
        self.label = label
        self.home = home
        self.relocation_port = relocation_port
        self.address = address  # where the other xend reaches its relocation server
        self.ledger = ledger
        self.lock = threading.Lock()  # one kill or start at a time
        self.token = ""
        self.events: list[tuple[int, float, str, sxp.Value]] = []  # (seq, time, name, value)
        self.checked_seq = 0
        self.polled_seq = 0

    def start(self, why: str) -> bool:
        """Start xend here if it is not running; whether it runs. A failed start is a
        violation (a full disk must not stop xend from starting)."""
        with self.lock:
            if self.home.pid() is not None:
                return True
            started = self.home.xend("start", timeout=OP_TIMEOUT * 2)
            if started.returncode != 0:
                self.ledger.violation(f"[{self.label}] `xend start` ({why}) failed: "
                                      f"{started.stderr.strip()[-300:]}")
                return False
            return True

    def kill9(self) -> bool:
        with self.lock:
            pid = self.home.pid()
            if pid is None:
                return False
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 10)
            return True

    def unix(self, timeout: float = OP_TIMEOUT) -> httpx.Client:
        return self.home.unix_http(timeout=timeout)

    def tcp(self) -> httpx.Client:
        """A TCP client with the admin token that closes its connection after each reply."""
        return httpx.Client(base_url=self.home.url, timeout=OP_TIMEOUT, verify=False,
                            headers={"Accept": "application/sxp", "Connection": "close",
                                     "Authorization": f"Bearer {self.token}"})

    def death_since(self, name: str, since: float) -> bool:
        """Whether this xend published the death of a domain ``name`` after ``since``."""
        return any(ev_name in DEATHS and isinstance(value, list) and value and value[0] == name
                   and when >= since - 1 for _, when, ev_name, value in self.events)


# --- the model: what acknowledged operations said ----------------------------------------------

UNKNOWN = "?"


@dataclass
class Slot:
    """One domain name: where acknowledged operations left it, and since when."""

    name: str
    disk: Path
    where: str | None = None  # a site's label, None (absent) or UNKNOWN
    since: float = 0.0  # when the last acknowledged operation was sent
    began: float = 0.0  # when the operation under way was sent
    gone_from: str | None = None  # a site the last acknowledged op took it away from
    hot_vbd: bool | None = False  # a hot-plugged vbd sdb listed (None: unknown)
    vbd_idx: str = ""  # its index
    saves: list[Path] = field(default_factory=list)  # acknowledged save files
    history: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=4))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, where: str | None, gone_from: str | None = None) -> None:
        # Since the operation was sent, not since its reply: the domain may end on its
        # new site before a slow reply (a migration's) comes back.
        self.where, self.gone_from, self.since = where, gone_from, self.began

    def unknown(self) -> None:
        self.where, self.gone_from, self.hot_vbd = UNKNOWN, None, None


def hypervisor_failure(text: str) -> bool:
    """Whether a 500's message is a failure of this xend's own hypervisor (README: 500 is
    for those); a relocation peer's failure, a full disk or an internal error is not."""
    return ("relocation" not in text and "Internal error" not in text
            and any(word in text for word in HV_FAILURE_WORDS))


# --- one operation --------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What came of a request: acknowledged, refused (a 4xx: nothing done), or unknown."""

    acked: bool
    refused: bool
    text: str


class Runner:
    """Runs one operation over a transport and tells how it ended."""

    def __init__(self, ledger: Ledger, rng: random.Random) -> None:
        self.ledger = ledger
        self.rng = rng
        self.unix_clients: dict[str, httpx.Client] = {}

    def close(self) -> None:
        for client in self.unix_clients.values():
            client.close()

    def http(self, site: Site, what: str, path: str, fields: dict[str, str],
             transport: str) -> Outcome:
        began = time.monotonic()
        try:
            if transport == "unix":
                if site.label not in self.unix_clients:
                    self.unix_clients[site.label] = site.unix()
                reply = self.unix_clients[site.label].post(path, data=fields)
            elif transport == "unix-close":  # a new connection, closed after the reply
                with site.unix() as client:
                    reply = client.post(path, data=fields, headers={"Connection": "close"})
            else:
                with site.tcp() as client:
                    reply = client.post(path, data=fields)
        except httpx.TimeoutException:
            self.ledger.violation(f"[{site.label}] {what} over {transport} hung: no reply in "
                                  f"{time.monotonic() - began:.0f} s")
            self._drop(site, transport)
            return Outcome(False, False, "timeout")
        except httpx.TransportError as error:  # xend killed under it: not acknowledged
            self.ledger.count("transport errors")
            self._drop(site, transport)
            return Outcome(False, False, f"transport: {error}")
        self.ledger.count(f"status {reply.status_code}")
        if reply.status_code == 500 and not hypervisor_failure(reply.text) \
                and HV_KILLED.get(site.label, 0) < began:  # else the run killed its qemu
            self.ledger.violation(f"[{site.label}] {what} over {transport} answered 500: "
                                  f"{reply.text.strip()[:200]}")
        return Outcome(reply.is_success, 400 <= reply.status_code < 500,
                       f"{reply.status_code} {reply.text.strip()[:200]}")

    def _drop(self, site: Site, transport: str) -> None:
        if transport == "unix" and site.label in self.unix_clients:
            self.unix_clients.pop(site.label).close()

    def xm(self, site: Site, what: str, *args: str) -> Outcome:
        assert XM
        env = {**os.environ, "XEND": f"127.0.0.1:{site.home.http_port}", "XEND_TOKEN": site.token}
        if site.address != "127.0.0.1":  # xend in a namespace: its Unix socket
            env = {**os.environ, "XEND_UNIX_PATH": str(site.home.unix_path)}
        try:
            done = subprocess.run([XM, *args], capture_output=True, text=True, env=env,
                                  timeout=OP_TIMEOUT + 30, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self.ledger.violation(f"[{site.label}] xm {what} hung: no exit in "
                                  f"{OP_TIMEOUT + 30:.0f} s")
            return Outcome(False, False, "timeout")
        self.ledger.count(f"xm exit {done.returncode}")
        if "Internal error" in done.stderr or "500" in done.stderr:
            self.ledger.violation(f"[{site.label}] xm {what}: {done.stderr.strip()[:200]}")
        return Outcome(done.returncode == 0, False, done.stderr.strip()[:200])


# --- the clients ------------------------------------------------------------------------------


class Torture:
    """The whole run: two sites, the slots, the clients, the killers and the checks."""

    def __init__(self, args: argparse.Namespace, work: Path, hv: Hypervisor | None = None) -> None:
        self.args = args
        self.hv: Hypervisor = hv or SimHv()  # the hypervisor's processes and list
        self.work = work
        self.ledger = Ledger()
        self.rng = random.Random(args.seed)
        self.sites: list[Site] = []
        self.slots = [Slot(f"tt-{n:02d}", work / f"disk-{n:02d}.img")
                      for n in range(args.domains)]
        for slot in self.slots:
            for file in (slot.disk, Path(f"{slot.disk}.sdb")):
                with open(file, "wb") as disk:
                    disk.truncate(1 << 20)
        (work / "saves").mkdir()
        self.stop = threading.Event()
        self.filler: Path | None = None
        self.figures: list[tuple[int, str, dict[str, int]]] = []
        self.mounted: Path | None = None

    # --- setup and teardown ---

    def set_up(self) -> None:
        for label in ("a", "b"):
            port = free_port()
            home = self.hv.home(label, port)
            site = Site(label, home, port, self.ledger, self.hv.address(label))
            self.sites.append(site)
            if label == "a" and self.args.disk_full:
                home.dbroot.mkdir(parents=True, exist_ok=True)
                mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m",
                                          "tmpfs", str(home.dbroot)], capture_output=True)
                if mounted.returncode == 0:
                    self.mounted = home.dbroot
                else:
                    print(f"no tmpfs dbroot ({mounted.stderr.decode().strip()}): "
                          "no disk-full rounds", flush=True)
            started = home.xend("start")
            if started.returncode != 0:
                raise RuntimeError(f"xend {label} did not start: {started.stderr.strip()}")
            site.token = home.admin_token()

    def tear_down(self) -> None:
        self.free_disk()
        for site in self.sites:
            with contextlib.suppress(Exception):
                site.home.stop()
            self.hv.tear_down(site)
        if self.mounted is not None:
            subprocess.run(["umount", "-l", str(self.mounted)], check=False)
        time.sleep(0.5)
        for site in self.sites:
            left = self.processes_of(site)
            for pid, cmdline in left.items():
                self.ledger.violation(f"[{site.label}] orphan process after xend stop: "
                                      f"{pid} {cmdline}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if self.args.keep_logs:  # xend's log, to look into what the run found
                shutil.copytree(site.home.logfile.parent, Path(self.args.keep_logs) / site.label,
                                dirs_exist_ok=True)
            shutil.rmtree(site.home.root, ignore_errors=True)
        self.hv.close()

    def site(self, label: str) -> Site:
        return next(s for s in self.sites if s.label == label)

    # --- operations ---

    def client(self, number: int, rng: random.Random) -> None:
        runner = Runner(self.ledger, rng)
        try:
            while not self.stop.is_set():
                slot = rng.choice(self.slots)
                op = rng.choice(self.hv.ops)
                with slot.lock:
                    if self.stop.is_set():
                        break
                    self.operate(runner, rng, slot, op)
                self.ledger.count("operations")
        finally:
            runner.close()

    def transport(self, rng: random.Random) -> str:
        return rng.choices(*self.hv.transports)[0]

    def locate(self, slot: Slot) -> str | None:
        """Where the name is now, asking both xends (a name is per host: the run must not
        make a second one on the other xend itself); UNKNOWN if one does not answer."""
        found = None
        for site in self.sites:
            try:
                with site.unix(timeout=10) as http:
                    status = http.get(f"/xend/domain/{slot.name}").status_code
            except httpx.HTTPError:
                return UNKNOWN
            if status == 200:
                found = site.label
            elif status != 404:
                return UNKNOWN
        return found

    def operate(self, runner: Runner, rng: random.Random, slot: Slot, op: str) -> None:
        slot.began = time.time()
        if op in ("create", "restore") and slot.where in (None, UNKNOWN):
            slot.where = self.locate(slot)
            if slot.where == UNKNOWN:
                return
        where = slot.where if slot.where not in (None, UNKNOWN) else rng.choice("ab")
        site = self.site(where)
        other = self.site("b" if where == "a" else "a")
        how = self.transport(rng)
        name = slot.name
        path = f"/xend/domain/{name}"
        what = f"{op} {name}"

        def request(fields: dict[str, str], xm_args: tuple[str, ...], url: str = path) -> Outcome:
            if how == "xm" and xm_args:
                done = runner.xm(site, what, *xm_args)
            else:
                done = runner.http(site, what, url, fields, "unix" if how == "xm" else how)
            slot.history.append(f"{time.strftime('%H:%M:%S')} {op} on {site.label} via {how}: "
                                f"{done.text[:50]}")
            return done

        if op == "create":
            if slot.where not in (None, UNKNOWN) and rng.random() < 0.7:
                return
            config = self.work / f"{name}.sxp"
            vm = sxp.show(self.hv.vm_config(name, slot.disk, self.slots.index(slot)))
            config.write_text(vm)
            done = request({"op": "create", "config": vm},
                           ("create", str(config)), "/xend/domain/")
            if done.acked:
                slot.ack(site.label)
                slot.hot_vbd = False
            elif not done.refused:
                slot.unknown()
            return
        if op == "restore":
            if not slot.saves or (slot.where not in (None, UNKNOWN) and rng.random() < 0.7):
                return
            saved = slot.saves[-1]
            done = request({"op": "restore", "file": str(saved)}, ("restore", str(saved)),
                           "/xend/domain/")
            if done.acked:
                slot.ack(site.label)
                slot.hot_vbd = None  # the devices are the saved domain's, whichever they were
            elif not done.refused:
                slot.unknown()
            return
        if op == "console":
            self.poke_console(site, name)
            return
        if op in ("pause", "unpause"):
            done = request({"op": op}, (op, name))
        elif op == "destroy":
            done = request({"op": "destroy", "reason": "halt"}, ("destroy", name))
            if done.acked:
                slot.ack(None, site.label)
        elif op in ("shutdown", "reboot"):
            reason = "poweroff" if op == "shutdown" else "reboot"
            xm_args = ("shutdown", name) if op == "shutdown" else ()
            done = request({"op": "shutdown", "reason": reason}, xm_args)
            if done.acked and op == "reboot":
                slot.ack(site.label)
            elif done.acked:  # a paused guest shuts down only once unpaused: either is fine
                slot.unknown()
        elif op == "save":
            file = self.work / "saves" / f"{name}-{int(time.time() * 1000)}.save"
            done = request({"op": "save", "file": str(file)}, ("save", name, str(file)))
            if done.acked:
                slot.ack(None, site.label)
                slot.saves.append(file)
                self.prune_saves(slot)
        elif op == "migrate":
            destination = f"{other.address}:{other.relocation_port}"
            done = request({"op": "migrate", "destination": destination,
                            "live": str(rng.randint(0, 1))}, ("migrate", name, destination))
            if done.acked:
                slot.ack(other.label, site.label)
        elif op == "vbd":
            if slot.hot_vbd:
                done = request({"op": "device_destroy", "type": "vbd", "idx": slot.vbd_idx}, ())
                if done.acked:
                    slot.hot_vbd = False
            else:
                device = sxp.show(["vbd", ["uname", f"file:{slot.disk}.sdb"], ["dev", "sdb"],
                                   ["mode", "w!"]])
                done = request({"op": "device_create", "config": device}, ())
                if done.acked:
                    slot.hot_vbd = True
                    slot.vbd_idx = str(sxp.child_value(sxp.parse(done.text.partition(" ")[2]),
                                                       "idx"))
            if not done.acked and not done.refused:
                slot.hot_vbd = None
            return
        elif op == "vif":
            done = request({"op": "device_create", "config": "(vif)"}, ("vif-create", name))
            if done.acked:
                idx = sxp.child_value(sxp.parse(done.text.partition(" ")[2]), "idx") \
                    if done.text[:1] == "2" else None
                if idx is not None:
                    request({"op": "device_destroy", "type": "vif", "idx": str(idx)}, ())
            return
        elif op == "sched":  # a cpu weight: the qemu driver gives its qemu a cgroup
            done = request({"op": "cpu_bvt_set", "mcuadv": str(rng.choice((5, 10, 20))),
                            "warpback": "0", "warpvalue": "0", "warpl": "0", "warpu": "0"}, ())
            return
        else:
            return
        if not done.acked and not done.refused:
            slot.unknown()

    def prune_saves(self, slot: Slot) -> None:
        """Only the last few save files of a name are kept (a qemu one is 90 MiB)."""
        while self.hv.keep_saves and len(slot.saves) > self.hv.keep_saves:
            with contextlib.suppress(OSError):
                slot.saves.pop(0).unlink()

    def poke_console(self, site: Site, name: str) -> None:
        """A console client: connect to the domain's raw port, type a line, read a bit."""
        try:
            with site.unix(timeout=10) as http:
                reply = http.get(f"/xend/domain/{name}")
            if reply.status_code != 200:
                return
            info = sxp.parse(reply.text)
            port = int(sxp.child_value(sxp.child(info, "console"), "console_port"))
            with self.hv.connect(site, port) as con:
                con.sendall(b"\n")
                con.recv(4096)
            self.ledger.count("console pokes")
        except (OSError, httpx.HTTPError, ValueError, TypeError) as error:
            self.ledger.count(f"console errors ({type(error).__name__})")

    # --- events ---

    def long_poll(self, site: Site) -> None:
        """Follow a xend's events with long-polls, checking their numbers."""
        client: httpx.Client | None = None
        while not self.stop.is_set():
            try:
                if client is None:
                    client = site.unix(timeout=15)
                reply = client.get("/xend/event/",
                                   params={"since": site.polled_seq, "timeout": 3})
                if reply.status_code != 200:
                    time.sleep(0.2)
                    continue
                batch = sxp.parse(reply.text)
            except (httpx.HTTPError, ValueError):
                if client is not None:
                    client.close()
                client = None
                time.sleep(0.2)
                continue
            self.ledger.count("long-polls")
            self.take_events(site, batch, "long-poll")  # type: ignore[arg-type]
        if client is not None:
            client.close()

    def take_events(self, site: Site, batch: list[sxp.Value], how: str) -> None:
        for record in batch:
            seq = int(sxp.child_value(record, "seq"))
            if seq <= site.polled_seq:
                self.ledger.violation(f"[{site.label}] event {seq} repeated ({how}): after "
                                      f"{site.polled_seq} came {seq}")
                continue
            if seq != site.polled_seq + 1 and site.polled_seq > 0:
                self.ledger.violation(f"[{site.label}] events {site.polled_seq + 1}..{seq - 1} "
                                      f"missing ({how}): after {site.polled_seq} came {seq}")
            site.polled_seq = seq
            site.events.append((seq, float(sxp.child_value(record, "time")),
                                str(sxp.child_value(record, "name")),
                                sxp.child_value(record, "value")))

    # --- the killers ---

    def killer(self, storm: bool, rng: random.Random, fill_disk: bool) -> None:
        if self.args.kill_every <= 0:  # calm: the instrument's own baseline, no faults
            return
        began = time.monotonic()
        while not self.stop.is_set():
            pause = rng.uniform(1, 3) if storm else rng.uniform(0.5, 1.5) * self.args.kill_every
            if self.stop.wait(pause):
                break
            if fill_disk and self.filler is None and time.monotonic() - began > 2:
                self.fill_disk()
            site = rng.choice(self.sites) if rng.random() < 0.3 else self.sites[0]
            if rng.random() < 0.2:
                HV_KILLED[site.label] = time.monotonic()
                if self.hv.kill_one(site, rng):
                    self.ledger.count(f"{self.hv.name} kills")
                continue
            if site.kill9():
                self.ledger.count("xend kills")
                if site.start("after kill -9"):
                    self.ledger.count("restarts survived")

    def fill_disk(self) -> None:
        if self.mounted is None:
            return
        self.filler = self.mounted / "torture-filler"
        with contextlib.suppress(OSError), open(self.filler, "wb") as out:
            chunk = b"\0" * 65536
            while True:
                try:
                    out.write(chunk)
                    out.flush()
                except OSError as error:
                    if error.errno == errno.ENOSPC:
                        break
                    raise
        self.ledger.count("disk fills")

    def free_disk(self) -> None:
        if self.filler is not None:
            with contextlib.suppress(OSError):
                self.filler.unlink()
            self.filler = None

    # --- a round ---

    def round(self, number: int, seconds: float) -> None:
        kinds = ["normal", "storm"] + (["disk-full"] if self.mounted is not None else [])
        if self.args.kill_every <= 0:
            kinds = ["calm"]
        kind = kinds[number % len(kinds)]
        print(f"round {number}: {kind}, {seconds:.0f} s", flush=True)
        self.ledger.round = number
        self.stop.clear()
        threads = [threading.Thread(target=self.client, args=(n, random.Random(self.rng.random())),
                                    daemon=True) for n in range(self.args.clients)]
        threads += [threading.Thread(target=self.long_poll, args=(site,), daemon=True)
                    for site in self.sites]
        threads.append(threading.Thread(
            target=self.killer, args=(kind == "storm", random.Random(self.rng.random()),
                                      kind == "disk-full"), daemon=True))
        for thread in threads:
            thread.start()
        self.stop.wait(seconds)
        self.stop.set()
        for thread in threads:
            thread.join(OP_TIMEOUT * 2 + 30)
            if thread.is_alive():
                self.ledger.violation(f"round {number}: a client thread still busy "
                                      f"{OP_TIMEOUT * 2 + 30:.0f} s after the round ended")
        self.free_disk()
        for site in self.sites:
            # A helper killed in the round's last moment is started again by a running xend
            # once it notices: a violation only if it did not within the settling time (a
            # xend not running starts one below).
            try:
                wait_for(lambda site=site: not self.hv.helper_dead(site)
                         or not self.xend_runs(site), SETTLE)
            except AssertionError:
                self.ledger.violation(f"round {number}: [{site.label}] xend runs on without its "
                                      f"xend-simhv (killed in the round): nothing restarted it "
                                      f"within {SETTLE:g} s")
                site.kill9()
            for attempt in range(3):
                if site.start(f"round {number} check, attempt {attempt + 1}"):
                    break
                time.sleep(2)
        self.check(number)

    @staticmethod
    def xend_runs(site: Site) -> bool:
        pid = site.home.pid()
        return pid is not None and not process_gone(pid)

    # --- the checks ---

    def view(self, site: Site) -> tuple[list[sxp.Value], list[tuple[int, str]], dict[int, str]]:
        """xend's detailed list; the hypervisor's (domid, name)s; the store's domid → name."""
        with site.unix(timeout=OP_TIMEOUT) as http:
            reply = http.get("/xend/domain/", params={"detail": 1})
        listed = sxp.parse(reply.text) if reply.status_code == 200 else []
        hv = self.hv.domains(site)
        store = {}
        for record in (site.home.dbroot / "domain").glob("*"):
            with contextlib.suppress(OSError, ValueError, sxp.ParseError):
                value = sxp.parse(record.read_text().split("\n", 1)[1])
                store[int(record.name)] = str(sxp.child_value(value, "name"))
        return listed, hv, store  # type: ignore[return-value]

    def expected_missing(self, views: dict[str, tuple]) -> list[str]:
        """What acknowledged operations said that the xends do not show (yet)."""
        missing = []
        names = {label: {str(sxp.child_value(d, "name")) for d in view[0]}
                 for label, view in views.items()}
        for slot in self.slots:
            if slot.where in ("a", "b") and slot.name not in names[slot.where] \
                    and not self.site(slot.where).death_since(slot.name, slot.since):
                missing.append(f"{slot.name} acknowledged on xend {slot.where} (asked at "
                               f"{time.strftime('%H:%M:%S', time.localtime(slot.since))}) "
                               "is not there and no death of it was published; "
                               f"{self.story(slot.name)}")
            domain = next((d for d in views[slot.where][0]
                           if sxp.child_value(d, "name") == slot.name), None) \
                if slot.where in ("a", "b") else None
            if domain is not None and slot.hot_vbd is not None \
                    and "p" not in str(sxp.child_value(domain, "state")) \
                    and (hot_vbd(domain) is not None) != slot.hot_vbd:
                missing.append(f"{slot.name}: a hot-plugged vbd sdb was acknowledged "
                               f"{'added' if slot.hot_vbd else 'removed'}, yet it is "
                               f"{'not ' if slot.hot_vbd else ''}listed; {self.story(slot.name)}")
            if slot.gone_from in ("a", "b") and slot.where != slot.gone_from \
                    and slot.name in names[slot.gone_from]:
                missing.append(f"{slot.name} acknowledged gone from xend {slot.gone_from} "
                               f"is still listed there; {self.story(slot.name)}")
        return missing

    def check(self, number: int) -> None:
        self.ledger.count("rounds")
        deadline = time.monotonic() + SETTLE
        while True:
            for site in self.sites:
                self.read_events(site)
            views = {site.label: self.view(site) for site in self.sites}
            missing = self.expected_missing(views)
            stored = {site.label: self.store_problems(site, views[site.label])
                      for site in self.sites}
            consistent = not any(stored.values()) and not self.name_problems(views)
            # A domain dying on its own (a guest's poweroff) takes its taps down before it
            # leaves the list: what is left over counts once the xends had time to settle.
            # Reported as found here, beside the list they were found against (a domain
            # that ends after this look would leave its closed console beside a stale list).
            orphans = {site.label: self.orphans(site, views[site.label][0])
                       for site in self.sites}
            settled = not any(orphans.values())
            if (not missing and consistent and settled) or time.monotonic() > deadline:
                break
            time.sleep(1)
        for text in missing:
            self.ledger.violation(f"round {number}: {text}")
        for site in self.sites:
            for text in stored[site.label]:
                self.ledger.violation(f"round {number}: [{site.label}] {text}")
            for text in orphans[site.label]:
                self.ledger.violation(f"round {number}: [{site.label}] {text}")
        for text in self.name_problems(views):
            self.ledger.violation(f"round {number}: {text}")
        for slot in self.slots:
            for file in slot.saves:
                if not file.is_file() or file.stat().st_size == 0:
                    self.ledger.violation(f"round {number}: acknowledged save file {file} "
                                          "is missing or empty")
        self.resync(views)
        self.measure(number)

    def read_events(self, site: Site) -> None:
        """The events the long-poll has not seen yet, and the log checked from the start."""
        try:
            with site.unix() as http:
                while True:
                    reply = http.get("/xend/event/", params={"since": site.polled_seq,
                                                             "timeout": 0})
                    batch = sxp.parse(reply.text) if reply.status_code == 200 else []
                    if not batch:
                        break
                    self.take_events(site, batch, "check")  # type: ignore[arg-type]
                since = site.checked_seq
                while True:
                    reply = http.get("/xend/event/", params={"since": since, "timeout": 0})
                    batch = sxp.parse(reply.text) if reply.status_code == 200 else []
                    if not batch:
                        break
                    for record in batch:
                        seq = int(sxp.child_value(record, "seq"))
                        if seq != since + 1:
                            self.ledger.violation(f"[{site.label}] event log: after {since} "
                                                  f"comes {seq}")
                        since = seq
                site.checked_seq = since
        except httpx.HTTPError as error:
            self.ledger.violation(f"[{site.label}] events unreadable at a check: {error}")

    def store_problems(self, site: Site, view: tuple) -> list[str]:
        listed, hv, store = view
        problems = []
        xend = {int(sxp.child_value(d, "id")): str(sxp.child_value(d, "name")) for d in listed}
        hv_ids = dict(hv)
        if -1 in hv_ids:
            return [f"hypervisor {hv_ids[-1]}"]
        for domid, name in sorted(hv_ids.items()):
            if domid not in xend:
                problems.append(f"domain {domid} ({name!r}) in the hypervisor, not in xend's list")
            if domid not in store:
                problems.append(f"domain {domid} ({name!r}) in the hypervisor has no store "
                                "record")
        for domid, name in sorted(xend.items()):
            if domid not in hv_ids:
                problems.append(f"domain {domid} ({name}) in xend's list, not in the hypervisor")
            elif store.get(domid, name) != name:
                problems.append(f"domain {domid}: xend says {name}, its record "
                                f"{store[domid]}")
        for domid, name in sorted(store.items()):
            if domid not in hv_ids:
                problems.append(f"store record domain/{domid} ({name}) without a domain; "
                                f"{self.story(name)}")
        return problems

    def story(self, name: str) -> str:
        """The last operations on a name, for a violation's description."""
        slot = next((s for s in self.slots if s.name == name), None)
        return f"last ops: {list(slot.history)}" if slot is not None else ""

    def name_problems(self, views: dict[str, tuple]) -> list[str]:
        problems = []
        seen: dict[str, list[str]] = collections.defaultdict(list)
        for label, (listed, _, _) in views.items():
            for domain in listed:
                name = str(sxp.child_value(domain, "name"))
                domid = str(sxp.child_value(domain, "id"))
                seen[name].append(f"{label}:{domid}")
                if NAMELESS.fullmatch(name) and name != "Domain-0":
                    problems.append(f"[{label}] domain {domid} adopted nameless as {name}")
        for name, where in seen.items():
            if len(where) > 1 and name != "Domain-0":  # each xend has its own Domain-0
                problems.append(f"name {name} held by {len(where)} domains: {', '.join(where)}; "
                                f"{self.story(name)}")
        return problems

    def orphans(self, site: Site, listed: list[sxp.Value]) -> list[str]:
        problems = self.hv.orphans(site, self.processes_of(site), listed)
        ports = set()
        for domain in listed:
            console = sxp.child(domain, "console")
            if console is not None:
                ports.add(int(sxp.child_value(console, "console_port")))
        base = site.home.console_port_base
        # A console listens on its base plus the domain id, and ids grow past the base's
        # span within minutes: a listed console's port is looked for among everything xend
        # listens on; a stray listener only within the span (other homes' ranges lie past it).
        heard = self.hv.listening(site)
        listening = {port for port in heard if base <= port < base + CONSOLE_SPAN} \
            | (ports & heard)
        for port in sorted(listening - ports):
            problems.append(f"console port {port} listening with no domain of it")
        for port in sorted(ports - listening):
            problems.append(f"console port {port} of a listed domain not listening")
        sessions = sorted(p.name for p in (site.home.dbroot / "migrate").glob("*"))
        if sessions:
            problems.append(f"transfer sessions left in dbroot/migrate: {sessions}")
        intents = sorted(p.name for p in (site.home.dbroot / "intent").glob("*"))
        if intents:
            problems.append(f"create intents left in dbroot/intent: {intents}")
        strays = [p.name for p in (site.home.dbroot / "domain").glob("*")
                  if not p.name.isdigit()]
        strays += [p.name for p in (self.work / "saves").glob("*") if not
                   p.name.endswith(".save")]
        if strays:
            problems.append(f"stray files: {sorted(strays)}")
        return problems

    def processes_of(self, site: Site) -> dict[int, str]:
        root = str(site.home.root).encode() + b"/"
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                if root in cmdline and not process_gone(int(entry.name)):
                    found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
        return found

    def resync(self, views: dict[str, tuple]) -> None:
        """The next round starts from what the xends show."""
        for slot in self.slots:
            slot.where = next((label for label, view in views.items()
                               if any(sxp.child_value(d, "name") == slot.name for d in view[0])),
                              None)
            slot.gone_from, slot.since = None, time.time()
            domain = next((d for d in views[slot.where][0]
                           if sxp.child_value(d, "name") == slot.name), None) \
                if slot.where is not None else None
            idx = hot_vbd(domain) if domain is not None else None
            slot.hot_vbd, slot.vbd_idx = idx is not None, idx or ""

    def measure(self, number: int) -> None:
        for site in self.sites:
            pid = site.home.pid()
            if pid is None:
                continue
            with contextlib.suppress(OSError):
                figures = proc_status(pid)
                figures["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
                self.figures.append((number, site.label, figures))

    def flatness(self) -> None:
        """RSS, threads and open files of the last rounds against the first ones."""
        for label in ("a", "b"):
            rows = [f for _, site, f in self.figures if site == label]
            if len(rows) < 4:
                continue
            early = rows[: len(rows) // 2]
            late = rows[len(rows) // 2:]
            for key, slack in (("VmRSS", 30 * 1024), ("Threads", 20), ("fds", 40)):
                before = max(f[key] for f in early)
                after = max(f[key] for f in late)
                if after > before * 1.5 + slack:
                    self.ledger.violation(f"[{label}] {key} grew: at most {before} in the first "
                                          f"half of the rounds, {after} in the second")

    # --- the run ---

    def run(self) -> int:
        self.set_up()
        began = time.monotonic()
        end = began + self.args.minutes * 60
        number = 0
        try:
            while time.monotonic() < end - 10:
                self.round(number, min(self.args.round_seconds, max(10.0, end - time.monotonic())))
                number += 1
            self.flatness()
        finally:
            self.stop.set()
            self.tear_down()
        self.report(time.monotonic() - began)
        return 1 if self.ledger.violations else 0

    def report(self, seconds: float) -> None:
        counts = self.ledger.counts
        print(f"\n{counts['rounds']} rounds in {seconds / 60:.1f} min, seed {self.args.seed}, "
              f"{self.args.clients} clients, {self.args.domains} domains")
        print(f"operations {counts['operations']}, xend kill -9 {counts['xend kills']}, "
              f"restarts survived {counts['restarts survived']}, {self.hv.name} kills "
              f"{counts[self.hv.name + ' kills']}, disk fills {counts['disk fills']}")
        print("replies: " + ", ".join(f"{key} {value}" for key, value in sorted(counts.items())
                                      if key.startswith(("status", "xm exit", "transport",
                                                         "console", "long"))))
        for label in ("a", "b"):
            rows = [f for _, site, f in self.figures if site == label]
            if rows:
                print(f"xend {label} per round: RSS MiB "
                      f"{[round(f['VmRSS'] / 1024) for f in rows]}, threads "
                      f"{[f['Threads'] for f in rows]}, fds {[f['fds'] for f in rows]}")
        print(f"violations: {len(self.ledger.violations)} of "
              f"{len(self.ledger.kinds())} kinds")
        for kind, count in self.ledger.kinds().most_common():
            examples = [t for t in self.ledger.violations if kind_of(t) == kind]
            print(f"  - {count} x {kind}")
            for text in examples[:3]:
                print(f"      e.g. {text}")


def hot_vbd(domain: sxp.Value) -> str | None:
    """The index of a domain's vbd sdb (the hot-plugged one), if it has one."""
    for vbd in sxp.children(sxp.child(domain, "devices") or ["devices"], "vbd"):
        if sxp.child_value(vbd, "dev") == "sdb":
            return str(sxp.child_value(vbd, "idx"))
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--domains", type=int, default=8)
    parser.add_argument("--kill-every", type=float, default=10,
                        help="seconds between kills (0: no faults at all, a calm baseline)")
    parser.add_argument("--round-seconds", type=float, default=30)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--no-disk-full", dest="disk_full", action="store_false",
                        help="no tmpfs dbroot (it needs root)")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy each xend's log folder here")
    parser.add_argument("--qemu", action="store_true",
                        help="xend's qemu driver with real guests (keep --domains small: "
                             "each is a TCG guest of 128 MiB)")
    args = parser.parse_args()
    # A SIGTERM (a CI timeout) ends the run through its cleanup: xends, simhvs, the tmpfs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    work = Path(tempfile.mkdtemp(prefix="torture-"))
    hv: Hypervisor = QemuHv() if args.qemu else SimHv()
    HV_FAILURE_WORDS[:] = hv.failure_words
    try:
        status = Torture(args, work, hv).run()
    finally:
        hv.close()
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
