"""The ``/xend/domain`` resources: create, list and run domains (facts §4.4, §7).

Reads (a domain's info, the list, every info) are answered from the table's current
snapshot (``domain/view.py``) on the request's own thread, asking no actor, with each
domain's SXP text kept until the domain changes. A change finds the domain's Domain
actor in that snapshot too and asks it, so one slow domain never holds up requests
about the others; before its reply the client's next read is made to show the change:
a pause or unpause waits for the table's answer to the Domain's announcement of it,
anything else asks the table to ``sync``. Each request has one deadline
(``Services.deadline``, by its kind); the Domain actor gets the inner one, and a request
past its deadline answers 504 saying where the domain was left and which event tells
the end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import pykka
from werkzeug import Request

from xend_actors import sxp
from xend_actors.actors import ActorGone, Deadline
from xend_actors.device.config import parse_device
from xend_actors.device.info import VbdInfo, VifInfo
from xend_actors.domain.config import check_new_domain, parse_domain_config
from xend_actors.domain.domain import DomainProxy
from xend_actors.domain.restart import DESTROY_REASONS, SHUTDOWN_REASONS, reason_named
from xend_actors.domain.view import unknown_domain
from xend_actors.errors import BadRequest, NotFound, Timeout, XendError
from xend_actors.hypervisor.base import AtroposParams, BvtParams, FbvtParams, SchedParams
from xend_actors.transfer.transfer import TransferProxy
from xend_actors.web.forms import Kind, Param, optional
from xend_actors.web.resource import Answer, Reply, Resource, op
from xend_actors.web.services import OpKind, Services, answer

if TYPE_CHECKING:
    from xend_actors.transfer.session import TransferSessionProxy

D = TypeVar("D", VbdInfo, VifInfo)


def _ints(*names: str) -> tuple[Param, ...]:
    return tuple(Param(name, Kind.INT) for name in names)


class DomainDirResource(Resource):
    """``/xend/domain/``: every domain's name (or info with ``detail=1``); create."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.table = services.table
        self.transfer = services.transfer

    def get(self, request: Request, **url_args: str) -> Reply:
        view = self.services.view
        if request.args.get("detail", "0") not in ("0", ""):
            infos, shown = view.infos()
            return Reply(infos, shown=shown)
        names, shown = view.names()
        return Reply(names, shown=shown)

    @op("create", params=(Param("config", Kind.SXPR),), status=201)
    def create(self, request: Request, config: sxp.Value) -> Reply:
        parsed = check_new_domain(parse_domain_config(config))
        deadline = self.services.deadline(OpKind.BUILD)
        domain = answer(self.table.create(parsed), "the domain table", deadline)
        with _said_where(f"create of {parsed.name}", deadline,
                         "it is still being built, or removed if that failed; watch "
                         "xend.domain.create and xend.domain.died"):
            try:
                record = answer(domain.build(deadline.inner()),
                                f"building domain {parsed.name}", deadline)
            except XendError:
                # The failed build told the table the domain is gone: a read right after
                # the error finds it gone.
                with contextlib.suppress(XendError):
                    answer(self.table.sync(), "the domain table")
                raise
        answer(self.table.sync(), "the domain table")  # after the build's announcement
        info, shown = self.services.view.info(str(record.domid))
        location = f"{request.host_url}xend/domain/{record.name}"
        return Reply(info, 201, location=location, shown=shown)

    @op("restore", params=(Param("file"),), status=201)
    def restore(self, request: Request, file: str) -> Reply:
        with _transfer_session(self.transfer) as session:
            deadline = self.services.deadline(OpKind.TRANSFER)
            info = answer(session.restore(file, deadline.inner()), "the restore", deadline)
        return Reply(info, 201, location=f"{request.host_url}xend/domain/{info.name}")


class DomainResource(Resource):
    """``/xend/domain/<dom>``: one domain's info and operations."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.table = services.table
        self.transfer = services.transfer

    def get(self, request: Request, dom: str) -> Reply:
        info, shown = self.services.view.info(dom)
        return Reply(info, shown=shown)

    def _synced(self) -> None:
        """What was just changed is in the table's snapshot: the next read shows it."""
        answer(self.table.sync(), "the domain table")

    def _domain(self, dom: str, *, guest_only: bool = False) -> DomainProxy:
        """``dom``'s Domain actor, from the table's snapshot (no actor asked)."""
        return self.services.view.domain(dom, guest_only=guest_only)

    def _run(self, dom: str, call: Callable[[DomainProxy], pykka.Future[Any]], *,
             guest_only: bool = True, deadline: Deadline | None = None) -> str:
        """Ask ``dom``'s Domain actor to ``call``; one that went meanwhile is not found."""
        domain = self._domain(dom, guest_only=guest_only)
        try:
            done = answer(call(domain), f"domain {dom}", deadline or self.services.deadline())
        except (pykka.ActorDeadError, ActorGone):
            raise unknown_domain(dom) from None
        if isinstance(done, pykka.Future):  # the table's answer to the change's announcement
            answer(done, "the domain table")
        else:
            self._synced()
        return "0"

    @op("pause")
    def pause(self, request: Request, dom: str) -> str:
        return self._run(dom, lambda domain: domain.pause())

    @op("unpause")
    def unpause(self, request: Request, dom: str) -> str:
        return self._run(dom, lambda domain: domain.unpause())

    @op("shutdown", params=(Param("reason"), optional("key", default="")), status=202)
    def shutdown(self, request: Request, dom: str, reason: str, key: str) -> Reply:
        self._run(dom, lambda domain: domain.shutdown(reason_named(reason, SHUTDOWN_REASONS),
                                                      _sysrq_key(key)))
        return Reply("0", 202, location=_parent(request))

    @op("destroy", params=(Param("reason"),))
    def destroy(self, request: Request, dom: str, reason: str) -> Reply:
        why = reason_named(reason, DESTROY_REASONS)
        deadline = self.services.deadline(OpKind.DESTROY)
        with _said_where(f"destroy of {dom}", deadline, "the domain is still being "
                         "destroyed; watch xend.domain.died"):
            self._run(dom, lambda domain: domain.destroy(why, deadline.inner()),
                      deadline=deadline)
            # The table has passed the domain's `died` on by now (_run waited on it).
            answer(self.services.events.written(), "the event log", deadline)
        return Reply("0", location=_parent(request))

    @op("save", params=(Param("file"),))
    def save(self, request: Request, dom: str, file: str) -> str:
        with _transfer_session(self.transfer) as session:
            deadline = self.services.deadline(OpKind.TRANSFER)
            with _said_where(f"save of {dom}", deadline, "the save goes on; watch "
                             "xend.domain.save.progress and xend.domain.died"):
                answer(session.save(dom, file, deadline.inner()), f"the save of domain {dom}",
                       deadline)
        self._synced()
        return "0"

    @op("migrate", params=(Param("destination"), optional("live", Kind.INT, default=0),
                           optional("resource", Kind.INT, default=0)))
    def migrate(self, request: Request, dom: str, destination: str, live: int,
                resource: int) -> Reply:
        with _transfer_session(self.transfer) as session:
            deadline = self.services.deadline(OpKind.TRANSFER)
            with _said_where(f"migration of {dom}", deadline, "the migration goes on; watch "
                             "xend.domain.migrate.progress and xend.domain.died"):
                url = answer(session.migrate(dom, destination, bool(live), resource,
                                             deadline.inner()),
                             f"the migration of domain {dom}", deadline)
        self._synced()
        return Reply(url, location=url)

    @op("configure", params=(Param("config", Kind.SXPR),))
    def configure(self, request: Request, dom: str, config: sxp.Value) -> Answer:
        vm = sxp.child_value(config, "config") if sxp.name(config) == "domain" else config
        if vm is None:
            raise BadRequest("configure: the domain info has no (config (vm ...))")
        parsed = check_new_domain(parse_domain_config(vm))
        answer(self._domain(dom).configure(parsed), f"domain {dom}")
        return answer(self.table.info(dom), "the domain table")

    @op("maxmem_set", params=_ints("memory"))
    def maxmem_set(self, request: Request, dom: str, memory: int) -> str:
        return self._run(dom, lambda domain: domain.set_maxmem(memory), guest_only=False)

    @op("mem_target_set", params=_ints("target"), on_get=True)
    def mem_target_set(self, request: Request, dom: str, target: int) -> str:
        return self._run(dom, lambda domain: domain.set_memory_target(target),
                         guest_only=False)

    @op("pincpu", params=_ints("cpu"))
    def pincpu(self, request: Request, dom: str, cpu: int) -> str:
        return self._run(dom, lambda domain: domain.pincpu(cpu), guest_only=False)

    @op("cpu_bvt_set", "bvt_set",
        params=_ints("mcuadv", "warpback", "warpvalue", "warpl", "warpu"))
    def bvt_set(self, request: Request, dom: str, **params: int) -> str:
        return self._sched(dom, BvtParams(**params))

    @op("cpu_fbvt_set", "fbvt_set", params=_ints("mcuadv", "warp", "warpl", "warpu"))
    def fbvt_set(self, request: Request, dom: str, **params: int) -> str:
        return self._sched(dom, FbvtParams(**params))

    @op("cpu_atropos_set", "atropos_set",
        params=_ints("period", "slice", "latency", "xtratime"))
    def atropos_set(self, request: Request, dom: str, **params: int) -> str:
        return self._sched(dom, AtroposParams(**params))

    def _sched(self, dom: str, params: SchedParams) -> str:
        return self._run(dom, lambda domain: domain.set_sched(params), guest_only=False)


    # --- devices (facts §4.4): the info SXP, where the original returned a Python repr ---

    def _infos(self, dom: str, kind: type[D]) -> list[D]:
        devices = answer(self.table.devices(dom), "the domain table")
        return [device for device in devices if isinstance(device, kind)]

    def _one(self, dom: str, kind: type[D], idx: int) -> sxp.Value:
        for device in self._infos(dom, kind):
            if device.idx == idx:
                return device.sxpr()
        raise NotFound(f"domain {dom} has no {'vbd' if kind is VbdInfo else 'vif'} {idx}")

    @op("vbds", on_get=True, reads=True)
    def vbds(self, request: Request, dom: str) -> sxp.Value:
        return [device.sxpr() for device in self._infos(dom, VbdInfo)]

    @op("vbd", params=_ints("vbd"), on_get=True, reads=True)
    def vbd(self, request: Request, dom: str, vbd: int) -> sxp.Value:
        return self._one(dom, VbdInfo, vbd)

    @op("vifs", on_get=True, reads=True)
    def vifs(self, request: Request, dom: str) -> sxp.Value:
        return [device.sxpr() for device in self._infos(dom, VifInfo)]

    @op("vif", params=_ints("vif"), on_get=True, reads=True)
    def vif(self, request: Request, dom: str, vif: int) -> sxp.Value:
        return self._one(dom, VifInfo, vif)

    @op("device_create", params=(Param("config", Kind.SXPR),))
    def device_create(self, request: Request, dom: str, config: sxp.Value) -> sxp.Value:
        device = parse_device(config)
        domain = self._domain(dom, guest_only=True)
        deadline = self.services.deadline(OpKind.BUILD)
        info = answer(domain.device_create(device, deadline.inner()), f"domain {dom}",
                      deadline)
        self._synced()
        return info.sxpr()

    @op("device_configure", params=(Param("config", Kind.SXPR), *_ints("idx")))
    def device_configure(self, request: Request, dom: str, config: sxp.Value,
                         idx: int) -> sxp.Value:
        kind = sxp.name(config)
        if not isinstance(kind, str):
            raise BadRequest("device_configure: expected (vif ...)")
        if kind == "vif" and sxp.child_value(config, "mac") is None:
            # The mac cannot change: a config without one keeps the vif's own.
            current = [v for v in self._infos(dom, VifInfo) if v.idx == idx]
            if current:
                config = [*config, ["mac", current[0].mac]]
        device = parse_device(config)
        domain = self._domain(dom, guest_only=True)
        deadline = self.services.deadline(OpKind.BUILD)
        info = answer(domain.device_configure(kind, idx, device, deadline.inner()),
                      f"domain {dom}", deadline)
        self._synced()
        return info.sxpr()

    @op("device_destroy", params=(Param("type"), *_ints("idx")))
    def device_destroy(self, request: Request, dom: str, type: str, idx: int) -> str:
        domain = self._domain(dom, guest_only=True)
        deadline = self.services.deadline(OpKind.BUILD)
        answer(domain.device_destroy(type, idx, deadline.inner()), f"domain {dom}", deadline)
        self._synced()
        return "None"


@contextlib.contextmanager
def _said_where(what: str, deadline: Deadline, left: str) -> Iterator[None]:
    """A 504 inside says ``what`` did not finish within ``deadline`` and where it was
    ``left``: the work goes on after the request ends."""
    try:
        yield
    except Timeout:
        raise Timeout(f"{what} did not finish in {deadline.seconds:g} s; {left}") from None


@contextlib.contextmanager
def _transfer_session(transfer: TransferProxy | None) -> Iterator[TransferSessionProxy]:
    """A TransferSession actor of its own for one transfer, stopped when it is done."""
    if transfer is None:
        raise XendError("save, restore and migrate are not available in this xend", status=501)
    session = answer(transfer.session(), "the transfer actor")
    try:
        yield session
    finally:
        session.actor_ref.stop(block=False)  # after the transfer, if it is still running


def _parent(request: Request) -> str:
    return request.base_url.rstrip("/").rsplit("/", 1)[0]


def _sysrq_key(key: str) -> str:
    """The key as a character; the original sent its code as an int. A code that is no
    printable ASCII character is refused here, before it reaches a domain."""
    if not (key.isdigit() and key.isascii() and len(key) > 1):
        return key
    if len(key) > 3 or not 0x20 < int(key) < 0x7F:
        raise BadRequest(f"invalid sysrq key code {key[:20]}: a key is one printable "
                         "ASCII character or its code, 33 to 126")
    return chr(int(key))
