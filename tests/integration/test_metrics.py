"""Metrics and samples (issue 17): ``GET /metrics`` read with prometheus_client's own
parser, the samples API, through the gate like every door, on a real xend + simhv that
samples every half second."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.home import XendHome
from tests.support.processes import wait_for
from tests.support.xend import XM, Xend, run_xm
from xend_actors import sxp

pytestmark = pytest.mark.integration

INTERVAL = 0.5


@pytest.fixture(scope="module")
def shared_xend_config() -> str:
    return f"(sample-interval {INTERVAL})\n(sample-history 30)\n"


def metrics(xend: Xend) -> dict[str, list[Sample]]:
    reply = xend.get("/metrics")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples
            for family in text_string_to_metric_families(reply.text)}


def value(found: dict[str, list[Sample]], name: str, **labels: str) -> float | None:
    family = name.removesuffix("_total")
    for suffix in ("_bucket", "_count", "_sum"):
        family = family.removesuffix(suffix)
    for sample in found.get(family, []):
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def samples(xend: Xend, path: str = "/xend/samples/", **params: object) -> sxp.Value:
    return xend.get_sxp(path, **params)


def domain_in(sample: sxp.Value, name: str) -> sxp.Value | None:
    return next((d for d in sxp.children(sample, "domain")
                 if sxp.child_value(d, "name") == name), None)


@pytest.fixture
def vbd_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("disk") / "disk.img"
    path.write_bytes(bytes(1 << 20))
    yield str(path)


def test_metrics_show_each_domain_and_its_cpu_grows_while_it_runs(xend: Xend,
                                                                    vbd_file: str) -> None:
    xend.start_sim("met1", ["vbd", ["uname", f"file:{vbd_file}"], ["dev", "sda1"],
                            ["mode", "w"]])
    domid = xend.domid("met1")
    ids = {"domain": "met1", "id": domid}

    def cpu() -> float | None:
        return value(metrics(xend), "xend_domain_cpu_seconds_total", **ids)

    first = wait_for(cpu, what="met1 in a sample")
    assert isinstance(first, float)
    wait_for(lambda: (cpu() or 0) > first, what="met1's cpu seconds to grow")

    found = metrics(xend)
    assert value(found, "xend_domain_state", state="blocked", **ids) == 1.0
    assert value(found, "xend_domain_vcpus", **ids) == 1.0
    assert value(found, "xend_domain_memory_bytes", **ids) == 32 * 1024 * 1024
    assert value(found, "xend_domain_memory_max_bytes", **ids) == 32 * 1024 * 1024
    assert (value(found, "xend_domain_console_bytes_total", **ids) or 0) > 0  # its boot text
    assert value(found, "xend_domain_vbd_read_bytes_total", device="sda1", **ids) == 0
    assert value(found, "xend_domain_cpu_seconds_total", domain="Domain-0", id="0") is not None
    assert (value(found, "xend_event_sequence") or 0) > 0
    # xend's own: this very route's latency, by its rule, and the asks the create made.
    assert (value(found, "xend_http_request_duration_seconds_count", route="/metrics",
                  method="GET", status="200") or 0) >= 1
    assert any(s.labels.get("caller", "").startswith("DomainDirResource")
               for s in found["xend_actor_ask_duration_seconds"])
    assert "process_resident_memory_bytes" in found

    # The guest writes to its disk: the vbd's counters and its rate move.
    xend.sh("met1", "disk 0x801 write 0 hello", "wrote 5 bytes")
    wait_for(lambda: value(metrics(xend), "xend_domain_vbd_written_bytes_total",
                           device="sda1", **ids) == 5, what="the write to be counted")
    assert value(metrics(xend), "xend_domain_vbd_writes_total", device="sda1", **ids) == 1


def test_samples_give_the_latest_rates_and_a_domains_history(xend: Xend) -> None:
    xend.start_sim("met2")

    def rated() -> sxp.Value | None:
        domain = domain_in(samples(xend), "met2")
        return domain if domain is not None and sxp.child(domain, "rates") else None

    domain = wait_for(rated, what="met2's rates")
    rates = sxp.child(domain, "rates")
    assert 0 < float(sxp.child_value(rates, "cpu")) < 0.1  # an idle sim guest: 1 %
    assert sxp.child_value(domain, "state") == "-b---"
    assert int(sxp.child_value(domain, "memory")) == 32 * 1024 * 1024

    def history_of_three() -> sxp.Value | None:
        found = samples(xend, "/xend/domain/met2/samples")
        return found if len(sxp.child(found, "cpu")) > 3 else None

    history = wait_for(history_of_three, what="three samples")
    times = [float(t) for t in sxp.child(history, "time")[1:]]
    cpus = sxp.child(history, "cpu")[1:]
    assert len(times) == len(cpus) and times == sorted(times)
    last = int(sxp.child_value(history, "seq"))
    newer = samples(xend, "/xend/domain/met2/samples", since=last - 1)
    assert len(sxp.child(newer, "time")[1:]) == 1
    whole = samples(xend, history="1")
    assert sxp.child(domain_in(whole, "met2"), "history") is not None

    assert xend.get("/xend/domain/nosuch/samples").status_code == 404
    assert xend.get("/xend/domain/met2/samples", since="x").status_code == 400


def test_metrics_pass_the_gate(xend: Xend) -> None:
    home: XendHome = xend.home
    with home.http(token="") as anonymous:
        assert anonymous.get("/metrics").status_code == 401
    viewer = home.new_token("metrics-viewer", role="viewer")
    with home.http(token=viewer) as client:
        reply = client.get("/metrics", headers={"Accept": "text/plain",
                                                "User-Agent": "Prometheus/2.53"})
        assert reply.status_code == 200
        assert "xend_domain_cpu_seconds_total" in reply.text
        assert client.get("/xend/samples/").status_code == 200


def domain_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("xend_domain")]


def sample_time(text: str) -> float:
    found = {f.name: f.samples for f in text_string_to_metric_families(text)}
    taken = value(found, "xend_sample_timestamp_seconds")
    assert taken is not None
    return taken


def test_a_scrape_shows_the_latest_sample_rendered_once(xend: Xend) -> None:
    xend.start_sim("met3")
    wait_for(lambda: 'domain="met3"' in xend.get("/metrics").text, what="met3 in a sample")

    def same_sample_twice() -> tuple[str, str] | None:
        first, second = xend.get("/metrics").text, xend.get("/metrics").text
        return (first, second) if sample_time(first) == sample_time(second) else None

    # Two scrapes of one sample: the same domain lines (met3's cpu seconds grow between
    # samples, so a line made anew from another sample would differ).
    first, second = wait_for(same_sample_twice, what="two scrapes of one sample")
    assert domain_lines(first) == domain_lines(second)
    assert any('domain="met3"' in line for line in domain_lines(first))
    # Each new sample is in the very next scrape.
    seen = sample_time(second)

    def newer_sample() -> float | None:
        taken = float(sxp.child_value(samples(xend), "time"))
        return taken if taken > seen + 0.05 else None  # given to 10 ms; 0.5 s apart

    for _ in range(3):
        newer = wait_for(newer_sample, what="a newer sample")
        text = xend.get("/metrics").text
        seen = sample_time(text)
        assert seen > newer - 0.05
        assert domain_lines(text) != domain_lines(first)


def test_an_openmetrics_scrape_parses_and_ends_once(xend: Xend) -> None:
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )

    xend.start_sim("met4")
    wait_for(lambda: 'domain="met4"' in xend.get("/metrics").text, what="met4 in a sample")
    for _ in range(2):  # rendered at the first, kept for the second (or a newer sample)
        reply = xend.http.get("/metrics", headers={
            "Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"})
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("application/openmetrics-text")
        assert reply.text.endswith("# EOF\n") and reply.text.count("# EOF") == 1
        found = {f.name: f for f in openmetrics_families(reply.text)}
        cpu = found["xend_domain_cpu_seconds"]
        assert cpu.type == "counter"
        assert any(s.labels.get("domain") == "met4" for s in cpu.samples)
        assert found["xend_http_request_duration_seconds"].type == "histogram"
        assert "xend_event_sequence" in found
    # The plain text scrape beside it still has no EOF.
    assert "# EOF" not in xend.get("/metrics").text


# --- xm top --------------------------------------------------------------------------------


def test_xm_top_in_batch_prints_rounds_of_every_domain(xend: Xend) -> None:
    xend.start_sim("top1")
    wait_for(lambda: sxp.child(domain_in(samples(xend), "top1") or ["x"], "rates"),
             what="top1's rates")
    done = run_xm(xend.home, "top", "-b", "-n", "2", "-d", str(INTERVAL), "-s", "c")
    assert done.returncode == 0, done.stderr
    rounds = done.stdout.rstrip("\n").split("\n\n")
    assert len(rounds) == 2
    for text in rounds:
        summary, header, *lines = text.splitlines()
        assert summary.startswith("xm top - ") and "domains:" in summary
        assert header.split() == ["NAME", "ID", "STATE", "CPU(%)", "MEM(MiB)", "MAX(MiB)",
                                  "VCPUS", "VBD_RD", "VBD_WR", "NET_RX", "NET_TX"]
        rows = {line.split()[0]: line.split() for line in lines}
        assert rows["top1"][1] == xend.domid("top1")
        assert rows["top1"][2] == "-b---"
        assert 0 < float(rows["top1"][3]) < 10  # an idle sim guest: 1 % of a cpu
        assert rows["top1"][4] == "32"
        assert "Domain-0" in rows
    assert run_xm(xend.home, "top", "-d", "0").returncode == 1


def test_xm_top_draws_a_live_screen_and_quits_on_q(xend: Xend) -> None:
    xend.start_sim("top2")
    wait_for(lambda: domain_in(samples(xend), "top2"), what="top2 in a sample")
    assert XM
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm", "XEND": f"127.0.0.1:{xend.home.http_port}",
           "XEND_TOKEN": xend.home.admin_token()}
    process = subprocess.Popen([XM, "top", "-d", str(INTERVAL)], stdin=child, stdout=child,
                               stderr=child, env=env, start_new_session=True)
    os.close(child)
    seen = bytearray()

    def shows(text: bytes) -> bool:
        while select.select([main], [], [], 0.1)[0]:
            try:
                seen.extend(os.read(main, 65536))
            except OSError:
                break
        return text in seen

    try:
        wait_for(lambda: shows(b"top2") and shows(b"q quits"), timeout=30,
                 what="xm top's screen")
        assert b"CPU(%)" in seen
        os.write(main, b"q")
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)


def test_saves_and_restores_are_counted_with_their_duration(xend: Xend,
                                                            tmp_path_factory: pytest.TempPathFactory
                                                            ) -> None:
    def counted(kind: str) -> float:
        return value(metrics(xend), "xend_transfer_duration_seconds_count", kind=kind,
                     result="ok") or 0

    saves, restores = counted("save"), counted("restore")
    xend.start_sim("met3")
    image = tmp_path_factory.mktemp("save") / "met3.save"
    assert xend.ok(xend.post("/xend/domain/met3", op="save", file=str(image))) == "0"
    xend.ok(xend.post("/xend/domain/", op="restore", file=str(image)), 201)
    assert counted("save") == saves + 1
    assert counted("restore") == restores + 1
    found = metrics(xend)
    total = value(found, "xend_transfer_duration_seconds_sum", kind="save", result="ok")
    assert total is not None and total > 0
    failed = xend.post("/xend/domain/", op="restore", file=str(image) + ".none")
    assert failed.status_code >= 400
    assert (value(metrics(xend), "xend_transfer_duration_seconds_count", kind="restore",
                  result="error") or 0) >= 1


def test_a_stream_of_samples_sends_each_new_sample_once(xend: Xend) -> None:
    xend.start_sim("met4")
    seen: list[tuple[int, sxp.Value]] = []
    headers = {"Accept": "text/event-stream"}
    with xend.http.stream("GET", "/xend/samples/", headers=headers) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in reply.iter_lines():
            if line:
                key, _, text = line.partition(": ")
                fields[key] = text
            elif fields.get("event") == "sample":
                seen.append((int(fields["id"]), sxp.parse(fields["data"])))
                if len(seen) == 3:
                    break
                fields = {}
    ids = [seq for seq, _ in seen]
    assert ids == sorted(set(ids)) and ids[-1] - ids[0] >= 2
    for seq, sample in seen:
        assert sxp.child_value(sample, "seq") == str(seq)
    assert domain_in(seen[-1][1], "met4") is not None
    # Resuming after the last one it saw, a client gets the next, not that one again.
    with xend.http.stream("GET", "/xend/samples/",
                          headers={**headers, "Last-Event-ID": str(ids[-1])}) as reply:
        first = next(line for line in reply.iter_lines() if line.startswith("id: "))
    assert int(first.removeprefix("id: ")) > ids[-1]
