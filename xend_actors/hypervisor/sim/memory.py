"""A sim guest's memory: a deterministic pattern, so it costs nothing to keep yet can be
streamed page by page when the guest migrates.

A page's bytes follow from the guest's memory seed, the page number and how often the
guest wrote it (its version). A running guest writes pages of its working set (the
first ``WORKING_SET`` pages) as it works on its console; the dirty log names the pages
written since it was last read, which is what a live migration's pre-copy needs. The
seed and the versions travel in the guest's saved state, so the memory is the same
wherever the guest runs next.
"""

from __future__ import annotations

import hashlib
import struct

PAGE_SIZE = 4096
PAGES_PER_MB = (1 << 20) // PAGE_SIZE
WORKING_SET = 64  # the pages a running guest writes (all of them fit the smallest guest)
_WORD = struct.Struct(">Q")


def page_bytes(seed: int, page: int, version: int) -> bytes:
    """The contents of ``page`` of a guest with memory ``seed`` after ``version`` writes."""
    digest = hashlib.sha256(_WORD.pack(seed) + _WORD.pack(page) + _WORD.pack(version)).digest()
    return digest * (PAGE_SIZE // len(digest))


def read_pages(seed: int, versions: dict[int, int], first: int, count: int) -> bytes:
    """Pages ``first`` .. ``first + count - 1`` back to back."""
    return b"".join(page_bytes(seed, page, versions.get(page, 0))
                    for page in range(first, first + count))


class GuestMemory:
    """The memory of one sim guest: its seed, the versions of the pages it wrote and
    the dirty log."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.versions: dict[int, int] = {}
        self._dirty: set[int] = set()
        self._writes = 0

    def write(self) -> None:
        """The guest did some work: the next page of its working set changes."""
        page = self._writes % WORKING_SET
        self._writes += 1
        self.versions[page] = self.versions.get(page, 0) + 1
        self._dirty.add(page)

    def take_dirty(self) -> list[int]:
        """The pages written since the last call, sorted; the log starts empty again."""
        dirty, self._dirty = sorted(self._dirty), set()
        return dirty

    def export(self) -> dict[str, object]:
        return {"seed": self.seed, "versions": {str(p): v for p, v in self.versions.items()}}

    @classmethod
    def load(cls, saved: dict[str, object]) -> GuestMemory:
        """The memory ``export`` described; ValueError/TypeError/KeyError if it is not one."""
        memory = cls(int(str(saved["seed"])))
        versions = saved["versions"]
        if not isinstance(versions, dict) or len(versions) > WORKING_SET:
            raise ValueError("bad page versions")
        memory.versions = {int(p): int(v) for p, v in versions.items()}
        if any(not 0 <= p < WORKING_SET or v < 0 for p, v in memory.versions.items()):
            raise ValueError("page versions out of range")
        memory._writes = sum(memory.versions.values())
        return memory
