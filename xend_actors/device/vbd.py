"""From a vbd's config to what the block backend needs: the guest device number and the
host node behind the ``uname`` (facts §5.3, §9.5).

``phy:DEV`` is the host block device ``/dev/DEV``. Any other ``TYPE:PARAMS`` is bound by
the ``block-TYPE`` script of the config (``<script> bind PARAM ...``; its first output
line is the node) and unbound when the vbd goes (``<script> unbind NODE``). ``file:PATH``
needs no script: the hypervisor driver attaches the file itself, as Xen's ``block-file``
did with ``losetup``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

from xend_actors.actors import Deadline, within
from xend_actors.config import XendConfig
from xend_actors.device.scripts import SCRIPT_TIMEOUT, run_script
from xend_actors.errors import BadRequest, XendError

log = logging.getLogger(__name__)

_SD = re.compile(r"sd([a-p])([0-9]*)")
_HD = re.compile(r"hd([a-t])([0-9]*)")
_XD = re.compile(r"xd([a-d])([0-9]*)")
_HD_MAJORS = (3, 22, 33, 34, 56, 57, 88, 89, 90, 91)
SD_MAJOR, XD_MAJOR = 8, 13


def vdevice(dev: str) -> int:
    """The device number the guest sees for ``dev``: ``sda1``, ``hdb2``, ``xda1``, or a
    number; Linux's numbering, which xend 2.0.6 computed too (facts §5.3)."""
    name = dev.removeprefix("/dev/")
    if m := _SD.fullmatch(name):
        number = SD_MAJOR * 256 + 16 * (ord(m[1]) - ord("a")) + int(m[2] or 0)
        if int(m[2] or 0) < 16:
            return number
    elif m := _XD.fullmatch(name):
        if int(m[2] or 0) < 64:
            return XD_MAJOR * 256 + 64 * (ord(m[1]) - ord("a")) + int(m[2] or 0)
    elif m := _HD.fullmatch(name):
        letter, part = ord(m[1]) - ord("a"), int(m[2] or 0)
        if part < 64:
            return _HD_MAJORS[letter // 2] * 256 + (letter % 2) * 64 + part
    else:
        try:
            number = int(name, 0)
        except ValueError:
            number = -1
        if 0 < number <= 0xFFFF:
            return number
    raise BadRequest(f"vbd: Device not found: {dev}")


@dataclass(frozen=True)
class BoundNode:
    """The host node behind a uname, and the script that bound it ('' for none)."""

    node: str
    script: str = ""


def bind(config: XendConfig, uname: str, deadline: Deadline | None = None) -> BoundNode:
    """The node for ``uname``, running its block script if it has one (within
    ``deadline``, its request's)."""
    kind, sep, params = uname.partition(":")
    if not sep or not params:
        raise BadRequest(f"vbd: invalid uname {uname!r}: expected TYPE:PARAMS")
    script = config.block_scripts.get(kind, "")
    if script:
        lines = run_script(config, script, ["bind", *params.split(":")],
                           what=f"vbd {uname}: block script {script} bind",
                           timeout=within(deadline, SCRIPT_TIMEOUT).remaining())
        node = lines[0].strip() if lines else ""
        if not node:
            raise XendError(f"vbd {uname}: block script {script} named no device")
        return BoundNode(node, script)
    if kind == "phy":
        return BoundNode(params if params.startswith("/") else f"/dev/{params}")
    if kind == "file":
        if not os.path.isabs(params):
            raise BadRequest(f"vbd {uname}: the file must be an absolute path")
        return BoundNode(params)
    raise BadRequest(f"vbd {uname}: no block script for type {kind!r}: "
                     f"configure (block-{kind} SCRIPT)")


def unbind(config: XendConfig, bound: BoundNode, uname: str) -> None:
    """Undo ``bind``; a failing script is logged, since the vbd is going anyway."""
    if not bound.script:
        return
    try:
        run_script(config, bound.script, ["unbind", bound.node],
                   what=f"vbd {uname}: block script {bound.script} unbind")
    except XendError as error:
        log.warning("%s", error.message)
