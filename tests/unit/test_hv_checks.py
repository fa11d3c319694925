"""The argument checks both drivers make of a new domain (hypervisor/checks.py): the same
refusals, in the same words, whichever hypervisor xend runs."""

from __future__ import annotations

import pytest

from xend_actors.errors import BadRequest, HypervisorError
from xend_actors.hypervisor.checks import check_cpu, check_create, check_memory_free

WHAT = "cannot create domain web"


def test_a_domain_of_sane_size_on_any_cpu_or_one_the_host_has_passes() -> None:
    for cpu in (-1, 0, 3):
        check_create(WHAT, 1, 1, cpu, cpus=4)
    check_memory_free(WHAT, 512, 512)


@pytest.mark.parametrize(("memory_mb", "vcpus", "cpu", "said"), [
    (0, 1, -1, "cannot create domain web: memory must be at least 1 MiB, got 0"),
    (-5, 0, 9, "cannot create domain web: memory must be at least 1 MiB, got -5"),
    (64, 0, -1, "cannot create domain web: it needs at least 1 vcpu, got 0"),
    (64, 1, 4, r"cannot create domain web: cpu must be -1 \(any\) or 0..3, got 4"),
    (64, 1, -2, r"cannot create domain web: cpu must be -1 \(any\) or 0..3, got -2"),
])
def test_the_first_thing_wrong_is_refused_as_a_bad_request(memory_mb: int, vcpus: int,
                                                             cpu: int, said: str) -> None:
    with pytest.raises(BadRequest, match=f"^{said}$"):
        check_create(WHAT, memory_mb, vcpus, cpu, cpus=4)


def test_pinning_to_a_cpu_the_host_lacks_is_refused() -> None:
    with pytest.raises(BadRequest, match=r"^cannot pin domain 3 to cpu 2: cpu must be -1 "
                                         r"\(any\) or 0..1, got 2$"):
        check_cpu("cannot pin domain 3 to cpu 2", 2, cpus=2)


def test_memory_the_host_has_not_free_is_the_hypervisors_refusal() -> None:
    with pytest.raises(HypervisorError, match=r"^cannot create domain web: it needs 600 MiB "
                                              r"but only 584 MiB are free$"):
        check_memory_free(WHAT, 600, 584)
