"""The argument checks both drivers make, with the same sentences: a new domain's size
(at least 1 MiB and 1 vcpu), a cpu to run or pin it on, and memory enough to make it.

``what`` opens each sentence (``cannot create domain web``): it says what was refused.
"""

from __future__ import annotations

from xend_actors.errors import BadRequest, HypervisorError


def check_create(what: str, memory_mb: int, vcpus: int, cpu: int, *, cpus: int) -> None:
    """A new domain's size and cpu; BadRequest for the first one that cannot be."""
    if memory_mb < 1:
        raise BadRequest(f"{what}: memory must be at least 1 MiB, got {memory_mb}")
    if vcpus < 1:
        raise BadRequest(f"{what}: it needs at least 1 vcpu, got {vcpus}")
    check_cpu(what, cpu, cpus=cpus)


def check_cpu(what: str, cpu: int, *, cpus: int) -> None:
    """``cpu`` is -1 (any) or one of the host's ``cpus``."""
    if not -1 <= cpu < cpus:
        raise BadRequest(f"{what}: cpu must be -1 (any) or 0..{cpus - 1}, got {cpu}")


def check_memory_free(what: str, memory_mb: int, free_mb: int) -> None:
    """``memory_mb`` fits in the host's ``free_mb``."""
    if memory_mb > free_mb:
        raise HypervisorError(f"{what}: it needs {memory_mb} MiB but only {free_mb} MiB are "
                              "free")
