"""The pool list of 3 members x 1000 sim domains in one request (issue 18: aim ≤ 100 ms).

One etcd on loopback (its data in /dev/shm), three xends (sim driver) that are members
of one pool; each creates its 1000 domains through its own API, the three in parallel,
so that every name is claimed and every summary written by the members themselves.
Then, from the same client on the first member's Unix socket (kept-alive HTTP/1.1):

- ``GET /xend/pool/`` (SXP; and JSON): the figure, 3000 domains and 3 hosts. The member
  reads only what changed since its last read, with counts of stretches of keys
  (``pool/view.py``);
- the same right after a claim was deleted, when the member also lists the stretch
  that lost it;
- baselines in the same run: ``GET /xend/domain/?detail=1`` of that member (its 1000
  domains' whole infos, from the table's snapshot), and etcd alone: the two reads a
  member's reader makes (the whole pool, its first read; the changes since now with the
  counts, each read after), made by the member's own etcd client in this process:
  etcd's share of the figures.

Median of ``--runs`` requests each, wall time, taken in turns (one of each a round);
the ratios print beside.

    python bench/pool_list.py                # 3 x 1000
    python bench/pool_list.py --guests 100   # a short smoke run
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from common import load_average, print_table, running_xend, vm_config
from procfs import UnixConnection

from tests.support.home import XendHome
from tests.support.ports import free_port
from xend_actors.client import XendClient
from xend_actors.pool.entries import Keys
from xend_actors.pool.etcd import Etcd, Range
from xend_actors.pool.view import _starts, _stretches  # the reader's own ranges

MEMBERS = ("h0", "h1", "h2")
AIM_MS = 100.0


@contextmanager
def running_etcd() -> Iterator[tuple[str, int]]:
    """One etcd on loopback: its client host and port."""
    client, peer = free_port(), free_port()
    url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    folder = Path(tempfile.mkdtemp(prefix="etcd-bench-", dir="/dev/shm"))
    process = subprocess.Popen(
        ["etcd", "--name", "one", "--data-dir", str(folder / "data"),
         "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
         "--initial-cluster", f"one={peer_url}", "--quota-backend-bytes", str(2 << 30)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", client, timeout=1)
                connection.request("GET", "/health")
                if b"true" in connection.getresponse().read():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("etcd did not start")
            time.sleep(0.1)
        yield "127.0.0.1", client
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def create_all(home: XendHome, host: str, guests: int) -> float:
    """Create ``guests`` domains on the member at ``home``; the seconds it took."""
    start = time.perf_counter()
    with XendClient(unix_path=home.unix_path, timeout=120) as client:
        for number in range(guests):
            client.xend_domain_create(vm_config(f"{host}-{number:04d}"))
    return time.perf_counter() - start


Sample = Callable[[], tuple[float, int]]  # one timed request: its ms and its size


def timed(call: Callable[[], bytes]) -> Sample:
    def sample() -> tuple[float, int]:
        start = time.perf_counter()
        size = len(call())
        return (time.perf_counter() - start) * 1000, size

    return sample


def medians(samples: list[Sample], runs: int) -> list[tuple[float, int]]:
    """Each sample's median ms and its last size, taken in turns (round after round,
    the first a warm-up), so that a machine others share weighs on each alike."""
    taken: list[list[tuple[float, int]]] = [[] for _ in samples]
    for run in range(runs + 1):
        for sample, times in zip(samples, taken, strict=True):
            measured = sample()
            if run:
                times.append(measured)
    return [(statistics.median(ms for ms, _ in times), times[-1][1]) for times in taken]


def xend_get(connection: UnixConnection, url: str, accept: str) -> Callable[[], bytes]:
    def get() -> bytes:
        connection.request("GET", url, headers={"Accept": accept})
        reply = connection.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{url}: {reply.status} {body[:200]!r}")
        return body

    return get


class EtcdClient:
    """This client's own calls to the pool's etcd (its JSON gateway, http.client)."""

    def __init__(self, host: str, port: int, pool: str) -> None:
        self.connection = http.client.HTTPConnection(host, port, timeout=30)
        self.root = f"/xend-pool/{pool}/"

    def post(self, path: str, body: dict[str, Any]) -> bytes:
        self.connection.request("POST", path, body=json.dumps(body),
                                headers={"Content-Type": "application/json"})
        data = self.connection.getresponse().read()
        json.loads(data)
        return data

    def put(self, key: str, value: str) -> None:
        self.post("/v3/kv/put", {"key": _b64(self.root + key), "value": _b64(value)})

    def delete(self, key: str) -> None:
        self.post("/v3/kv/deleterange", {"key": _b64(self.root + key)})


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def etcd_reads(url: str, pool: str) -> tuple[Callable[[], bytes], Callable[[], bytes]]:
    """The two reads a member's ``PoolReader`` makes, by its own etcd client: the whole
    pool (its first read), and what changed since now with the stretches' counts (each
    read after), decoded into ``Kv`` values as the reader has them."""
    etcd, keys = Etcd([url], timeout=30), Keys(pool)
    _, (claims, summaries) = etcd.read(Range(keys.names, keys_only=True),
                                       Range(keys.domains, keys_only=True))
    claim_starts = _starts(tuple(kv.key[len(keys.names):] for kv in claims.kvs))
    summary_starts = _starts(tuple(kv.key[len(keys.domains):] for kv in summaries.kvs))

    def read(since: int) -> bytes:
        _, ranged = etcd.read(
            Range(keys.hosts), Range(keys.names, since=since),
            Range(keys.domains, since=since),
            *_stretches(keys.names, claim_starts, count_only=True),
            *_stretches(keys.domains, summary_starts, count_only=True))
        return b"x" * sum(len(kv.value) for each in ranged for kv in each.kvs)

    revision, _ = etcd.read(Range(keys.hosts))
    return (lambda: read(0)), (lambda: read(revision))


def after_a_delete(etcd: EtcdClient, get_pool: Callable[[], bytes]) -> Sample:
    """A read right after a claim was deleted: a stretch's count tells the reader, which
    lists that stretch's keys to find it."""
    measure = timed(get_pool)

    def sample() -> tuple[float, int]:
        etcd.put("names/zz-gone", MEMBERS[0])
        get_pool()  # the reader learns of the claim
        etcd.delete("names/zz-gone")
        return measure()

    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guests", type=int, default=1000, help="domains per member")
    parser.add_argument("--runs", type=int, default=30, help="requests per figure")
    args = parser.parse_args()
    pool = "bench"
    with ExitStack() as stack:
        host, port = stack.enter_context(running_etcd())
        homes = {member: stack.enter_context(running_xend(
            f"(xend-pool {pool})\n(xend-pool-etcd 'http://{host}:{port}')\n"
            f"(xend-pool-host {member})\n(loglevel INFO)\n")) for member in MEMBERS}
        with ThreadPoolExecutor(len(homes)) as creating:
            took = list(creating.map(create_all, homes.values(), homes.keys(),
                                     [args.guests] * len(homes)))
        print(f"created {args.guests} domains on each of {len(homes)} members in "
              f"{max(took):.1f} s (in parallel)")
        etcd = EtcdClient(host, port, pool)
        whole, changes = etcd_reads(f"http://{host}:{port}", pool)
        first = homes[MEMBERS[0]]
        connection = UnixConnection(str(first.unix_path), 60)
        get_pool = xend_get(connection, "/xend/pool/", "application/sxp")
        want = len(MEMBERS) * args.guests
        deadline = time.monotonic() + 60
        while get_pool().count(b"(id ") < want:  # every summary written, not just claimed
            if time.monotonic() > deadline:
                raise RuntimeError("the members' summaries did not all reach etcd")
            time.sleep(0.5)
        named = [
            ("GET /xend/pool/ (SXP)", timed(get_pool)),
            ("GET /xend/pool/ (JSON)", timed(xend_get(connection, "/xend/pool/",
                                                      "application/json"))),
            (f"GET /xend/domain/?detail=1 ({args.guests} here)",
             timed(xend_get(connection, "/xend/domain/?detail=1", "application/sxp"))),
            ("GET /xend/pool/ after a delete", after_a_delete(etcd, get_pool)),
            ("etcd alone: the whole read", timed(whole)),
            ("etcd alone: the changes-only read", timed(changes)),
        ]
        figures = [(name, ms, size) for (name, _), (ms, size)
                   in zip(named, medians([sample for _, sample in named], args.runs),
                          strict=True)]
        pool_ms = figures[0][1]
        print(f"\n{len(MEMBERS)} members x {args.guests} domains; median of {args.runs} "
              f"requests; load average {load_average()}\n")
        print_table(["read", "median ms", "bytes", "pool ÷ this"],
                    [[name, f"{ms:.1f}", str(size), f"{pool_ms / ms:.2f}"]
                     for name, ms, size in figures])
        print(f"\naim: GET /xend/pool/ ≤ {AIM_MS:g} ms: "
              f"{'met' if pool_ms <= AIM_MS else 'missed'} ({pool_ms:.1f} ms)")


if __name__ == "__main__":
    main()
