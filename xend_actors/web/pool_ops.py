"""``POST /xend/pool/``: the pool's operations that place a domain (``pool/placement.py``).

``op=create config=(vm ...) [unpause=1]`` on any member: the config is read as a
domain create reads it, the member with the most free memory that fits is picked, and
the domain is created there: here as ``POST /xend/domain/ op=create`` would, or on the
chosen member through its API (``pool/forward.py``, with the pool's token), whose
answer is passed on with its status. With ``unpause=1`` the domain is then unpaused on
the same member (destroyed again if that fails, as ``xm create`` does). A success is the
new domain's info with ``(host NAME)`` added: where it went.

``op=migrate dom=NAME [live=1] [resource=MBIT]`` on the member that runs the domain:
the destination is picked the same way among the other members that take migrations
(those that registered a relocation address), and the domain goes there by this xend's
own migration. A domain that runs on another member (its claim says which) is migrated
by that member: the request is forwarded to it, once (``forwarded=1``: it goes no
further), and its answer passed on. The answer is ``(migrate (host NAME) (location
URL))``.

A member that is not in a pool answers 404; the pool's etcd unreachable is a 503.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from werkzeug import Request

from xend_actors import sxp
from xend_actors.access.identity import principal_of
from xend_actors.domain.config import check_new_domain, parse_domain_config
from xend_actors.errors import BadGateway, Conflict, NotFound, XendError
from xend_actors.pool.entries import BadEntry, HostEntry
from xend_actors.pool.forward import Forwarded, forward
from xend_actors.pool.opening import Pool
from xend_actors.pool.placement import place
from xend_actors.web.domain import DomainDirResource, DomainResource
from xend_actors.web.forms import Kind, Param, optional
from xend_actors.web.resource import Reply, Resource, op, wire
from xend_actors.web.services import OpKind, Services

# Seconds a forwarded request is given beyond this one's deadline: the member has the
# same deadline and answers at its end (504, saying where it is); that answer is passed on.
FORWARD_MARGIN = 5.0


class PoolOpsResource(Resource):
    """``/xend/pool/``: create a domain where there is room; migrate one there."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._domains = DomainDirResource(services)
        self._domain = DomainResource(services)

    @property
    def pool(self) -> Pool:
        if self.services.pool is None:
            raise NotFound("this xend is not a member of a pool (xend-pool)")
        return self.services.pool

    def members(self) -> list[HostEntry]:
        """The members up now: those whose entry (under their lease) is in etcd."""
        pool = self.pool
        found = []
        for kv in pool.etcd.get_prefix(pool.keys.hosts):
            try:
                found.append(HostEntry.from_json(kv.value))
            except BadEntry:
                continue  # not what a member writes: no member to place on
        return found

    @op("create", params=(Param("config", Kind.SXPR), optional("unpause", Kind.INT, default=0)),
        status=201)
    def create(self, request: Request, config: sxp.Value, unpause: int) -> Reply:
        parsed = check_new_domain(parse_domain_config(config))
        deadline = self.services.deadline(OpKind.BUILD)
        chosen = place(self.members(), parsed.memory_mb, what=f"domain {parsed.name}")
        if chosen.host == self.pool.me:
            reply = self._domains.create(request, config)
            if unpause:
                self._started(parsed.name, lambda: self._domain.unpause(request, parsed.name),
                              lambda: self._domain.destroy(request, parsed.name, "halt"))
            return Reply(_with_host(wire(reply.value), chosen.host), 201, reply.location)
        token = self._token()

        def there(path: str, timeout: float, **fields: str) -> tuple[sxp.Value, str | None]:
            return self._answer(chosen, forward(chosen, path, fields, token, timeout=timeout,
                                                on_behalf=self._asker(request)))

        dom = f"/xend/domain/{quote(parsed.name, safe='')}"
        value, location = there("/xend/domain/", deadline.remaining() + FORWARD_MARGIN,
                                op="create", config=sxp.show(config))
        if unpause:
            self._started(
                parsed.name,
                lambda: there(dom, deadline.remaining() + FORWARD_MARGIN, op="unpause"),
                lambda: there(dom, self.services.config.destroy_timeout, op="destroy",
                              reason="halt"))
        return Reply(_with_host(value, chosen.host), 201, location)

    @op("migrate", params=(Param("dom"), optional("live", Kind.INT, default=0),
                           optional("resource", Kind.INT, default=0),
                           optional("forwarded", Kind.INT, default=0)))
    def migrate(self, request: Request, dom: str, live: int, resource: int,
                forwarded: int) -> Reply:
        pool = self.pool
        try:
            listed = self.services.view.current().find(dom)
        except NotFound:
            held = pool.etcd.get(pool.keys.name(dom))
            owner = held.value.decode("utf-8", "replace")[:64] if held else pool.me
            if owner == pool.me or forwarded:  # a forwarded request goes no further
                raise
            return self._migrate_there(owner, dom, live, resource, self._asker(request))
        record = listed.record
        memory = listed.hv.memory_kb // 1024 if listed.hv else \
            (record.config.memory_mb if record.config else 0)
        members = self.members()
        movable = frozenset(h.host for h in members if h.host != pool.me and h.relocation)
        if not movable:
            raise Conflict(f"no other pool member takes migrations (a relocation server) "
                           f"to move domain {record.name} to")
        chosen = place(members, memory, among=movable, what=f"domain {record.name}")
        reply = self._domain.migrate(request, record.name, chosen.relocation, live, resource)
        return Reply(["migrate", ["host", chosen.host], ["location", str(reply.value)]],
                     location=reply.location)

    # --- on another member ---------------------------------------------------------------

    def _asker(self, request: Request) -> str:
        """Whom this member acts for when it forwards ``request``, e.g. ``uid 0 via m0``."""
        return f"{principal_of(request.environ) or 'unknown'} via {self.pool.me}"

    def _migrate_there(self, owner: str, dom: str, live: int, resource: int,
                       asker: str) -> Reply:
        """Ask member ``owner``, which runs ``dom``, to migrate it to where there is room."""
        member = next((h for h in self.members() if h.host == owner), None)
        if member is None or self.pool.token is None:
            why = "which is not up" if member is None else "and this member has no pool " \
                "token (xend-pool-token-file) to ask it"
            raise Conflict(f"domain {dom} runs on pool member {owner}, {why}")
        deadline = self.services.deadline(OpKind.TRANSFER)
        value, location = self._answer(member, forward(
            member, "/xend/pool/", {"op": "migrate", "dom": dom, "live": str(live),
                                    "resource": str(resource), "forwarded": "1"},
            self.pool.token.token, timeout=deadline.remaining() + FORWARD_MARGIN,
            on_behalf=asker))
        return Reply(value, location=location)

    def _token(self) -> str:
        if self.pool.token is None:
            raise XendError("this member has no pool token (xend-pool-token-file): it "
                            "cannot forward to another member", status=503)
        return self.pool.token.token

    @staticmethod
    def _answer(member: HostEntry, forwarded: Forwarded) -> tuple[sxp.Value, str | None]:
        """The SXP value of a member's success; its error raised with its status."""
        try:
            value = sxp.parse(forwarded.body)
        except sxp.ParseError:
            raise BadGateway(f"pool member {member.host} answered {forwarded.status} with "
                             "something that is not SXP") from None
        if forwarded.status >= 300 or sxp.name(value) == "xend.err":
            message = str(value[1]) if sxp.name(value) == "xend.err" and len(value) > 1 \
                else f"status {forwarded.status}"
            raise XendError(f"pool member {member.host}: {message}",
                            status=forwarded.status if forwarded.status >= 400 else 502)
        return value, forwarded.location

    @staticmethod
    def _started(name: str, unpause: Callable[[], object],
                 destroy: Callable[[], object]) -> None:
        """Unpause the new domain, or destroy it and say why it could not start."""
        try:
            unpause()
        except XendError as error:
            failure = f"Failed to unpause domain {name}: {error.message}"
            try:
                destroy()
            except XendError as also:
                failure += f"; destroying it failed too: {also.message}"
            raise XendError(failure, status=error.status) from None


def _with_host(info: sxp.Value, host: str) -> sxp.Value:
    """The new domain's info, saying which member it went to."""
    return [*info, ["host", host]] if isinstance(info, list) else info
