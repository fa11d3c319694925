"""Device hot-plug through xend, beside the bare control messages it sends.

One paused sim guest. xend's round trip is ``device_create`` then ``device_destroy`` of
a vbd on a 1 MiB image file over HTTP (Unix socket): bind, sharing claim, backing,
BlkifBeCreate/VbdCreate/VbdGrow, store record, reply; then the reverse. The baseline
is the same backend work sent straight to xend-simhv from this process through
``SimDriver`` (attach_backing, VbdCreate, VbdGrow, VbdDestroy, detach_backing) on a
second guest whose interface is already made: what the hypervisor side costs alone.
For vifs, xend's round trip runs the shipped vif-bridge script twice (up and down,
bridge ``null``); its baseline is those two script runs alone.

    python bench/devices.py            # 200 vbd and 20 vif round trips
    python bench/devices.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import XendClient, load_average, print_table, running_xend, vm_config

from xend_actors import sxp
from xend_actors.device.scripts import SHIPPED_SCRIPTS
from xend_actors.hypervisor.ring import messages as m
from xend_actors.hypervisor.sim.driver import SimDriver


def timed(rounds: int, action: Callable[[], None]) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    options = parser.parse_args()
    vbd_rounds, vif_rounds = (20, 4) if options.quick else (200, 20)
    with running_xend() as home, tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "disk.img"
        image.write_bytes(b"\0" * (1 << 20))
        client = XendClient(unix_path=home.unix_path)
        client.xend_domain_create(vm_config("dev-bench"))
        other = int(sxp.child_value(client.xend_domain_create(vm_config("raw-bench")), "id"))
        vbd = ["vbd", ["uname", f"file:{image}"], ["dev", "sda1"], ["mode", "w"]]

        def xend_vbd() -> None:
            client.xend_domain_device_create("dev-bench", vbd)
            client.xend_domain_device_destroy("dev-bench", "vbd", 0)

        driver = SimDriver(home.simhv_socket)
        m.check(driver.send_control(0, m.BlkifBeCreate(other, 0)), "raw")

        def raw_vbd() -> None:
            device = driver.attach_backing(str(image))
            m.check(driver.send_control(0, m.BlkifBeVbdCreate(other, 0, 0x801, 0)), "raw")
            m.check(driver.send_control(0, m.BlkifBeVbdGrow(
                other, 0, 0x801, m.Extent(0, 1 << 63, device))), "raw")
            m.check(driver.send_control(0, m.BlkifBeVbdDestroy(other, 0, 0x801)), "raw")
            driver.detach_backing(device)

        def xend_vif() -> None:
            client.xend_domain_device_create("dev-bench", ["vif", ["mac", "aa:00:00:00:00:01"]])
            client.xend_domain_device_destroy("dev-bench", "vif", 0)

        script = [sys.executable, str(SHIPPED_SCRIPTS / "vif-bridge")]
        words = ["vif=vif1.0", "domain=dev-bench", "mac=aa:00:00:00:00:01", "bridge=null"]

        def raw_vif() -> None:
            for op in ("up", "down"):
                subprocess.run([*script, op, *words], check=True)

        rows = []
        for name, ours, bare, rounds in (("vbd create+destroy", xend_vbd, raw_vbd, vbd_rounds),
                                         ("vif create+destroy", xend_vif, raw_vif, vif_rounds)):
            ours(), bare()  # warm up
            xend_times, bare_times = timed(rounds, ours), timed(rounds, bare)
            ratio = statistics.median(xend_times) / statistics.median(bare_times)
            rows.append([name, str(rounds), f"{statistics.median(xend_times) * 1000:.1f}",
                         f"{statistics.median(bare_times) * 1000:.1f}", f"{ratio:.2f}x"])
        driver.close()
        client.close()
    print_table(["round trip", "n", "xend ms (p50)", "baseline ms (p50)", "ratio"], rows)
    print(f"load average: {load_average()}")


if __name__ == "__main__":
    main()
