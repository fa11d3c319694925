"""SXP speed on a big reply: ``show`` and ``parse_all``, fast path against the reference.

The value is what ``GET /xend/domain/?detail=1`` returns with 1000 guests: a list of
domain infos (facts §4.5), each with its console and its ``(config (vm ...))``, about
380 KB printed. Each figure is the median of 5 runs; the reference is the state
machine (``_parse_all_reference``) or the item-by-item printer (``_show_reference``).
Not a test: it asserts only that both ways give the same result.

    python bench/sxp_speed.py
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python bench/sxp_speed.py``
    sys.path.insert(0, str(ROOT))

from xend_actors import sxp  # noqa: E402

DOMAINS = 1000
RUNS = 5


def domain_info(domid: int) -> list:
    """A domain info as xend's reply has it (field order of facts §4.5)."""
    name = f"bench-{domid:04d}"
    return [
        "domain", ["id", str(domid)], ["name", name], ["memory", "16"], ["maxmem", "16"],
        ["state", "-b---"], ["cpu", str(domid % 4)], ["cpu_time", 0.012345678 * domid],
        ["up_time", 125.450000048 + domid], ["start_time", 1099651234.56 + domid],
        ["console", ["status", "listening"], ["id", str(domid)], ["domain", str(domid)],
         ["local_port", str(20 + domid)], ["remote_port", "1"],
         ["console_port", str(21100 + domid)]],
        ["devices"],
        ["config", ["vm", ["name", name], ["memory", "16"],
                    ["image", ["linux", ["kernel", "/boot/vmlinuz-sim"],
                               ["root", "/dev/sda1 ro"]]]]],
    ]


def median_ms(action: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def main() -> None:
    value = [domain_info(domid) for domid in range(1, DOMAINS + 1)]
    text = sxp.show(value)
    data = text.encode()
    assert text == sxp._show_reference(value)
    assert sxp.parse_all(text) == sxp._parse_all_reference(text) == [sxp.parse(data)]
    assert sxp._parse_fast(text, sxp.MAX_DEPTH, sxp.MAX_SIZE) is not None  # no fallback

    rows = [
        ("show", lambda: sxp._show_reference(value), lambda: sxp.show(value)),
        ("parse_all (str)", lambda: sxp._parse_all_reference(text),
         lambda: sxp.parse_all(text)),
        ("parse (bytes)", lambda: sxp._parse_reference(data), lambda: sxp.parse(data)),
    ]
    print(f"{DOMAINS} domain infos, {len(data) / 1000:.0f} KB printed; median of {RUNS} runs")
    header = ("", "reference ms", "fast ms", "ratio")
    table = [header]
    for label, reference, fast in rows:
        before, after = median_ms(reference), median_ms(fast)
        table.append((label, f"{before:.1f}", f"{after:.1f}", f"{before / after:.1f}x"))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for k, row in enumerate(table):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells))
        if k == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    main()
