"""``/xend/pool/``: the pool this xend is a member of, as one view (``pool/view.py``).

``GET`` on any member answers every host of the pool with its state and room, and
every domain with its host, read from the pool's etcd at one revision::

    (pool (name P) (member M) (revision R)
      (hosts (host (name h1) (state up) (domain_count 2) (api URL) (fingerprint SHA256)
                   (free_mb 1024) (cpus 4) (load 0.12) (joined SECONDS)) ...)
      (domains (domain (name d1) (host h1) (id 3) (state r-----) (memory 32) (vcpus 1)
                       (ha no)) ...))

``member`` is the member that answered; ``revision`` etcd's revision the view is of.
Hosts and domains are sorted by name. A host whose lease expired while it still holds
claims is ``(host (name h2) (state down) (domain_count 1))``, and a domain its host has not
summed up yet is ``(domain (name d) (host h1))``. In JSON (``sxp_json``; ``hosts`` and
``domains`` are collections): ``{"pool": {"name": "P", ..., "hosts": [{"host": {...}}],
"domains": [{"domain": {...}}]}}``.

A xend in no pool answers 404; one whose etcd does not answer, 503. Viewers may read it.
``POST`` ops (create where there is room, migrate there) are ``web/pool_ops.py``'s.

The SXP text is the reader's, each domain's kept until it changes; the JSON text is
made here alike (``sxp_json`` is the web's), each domain's kept while the reader hands
the same domain value: a pool of thousands answers without mapping them all again.
"""

from __future__ import annotations

from dataclasses import replace

from werkzeug import Request, Response

from xend_actors.errors import NotFound
from xend_actors.pool.view import PoolDomain, PoolState
from xend_actors.web import sxp_json
from xend_actors.web.negotiate import JSON, JSON_MIMETYPE, wanted
from xend_actors.web.pool_ops import PoolOpsResource
from xend_actors.web.resource import Reply
from xend_actors.web.services import Services


class PoolResource(PoolOpsResource):
    """``/xend/pool/``: the pool's hosts and domains; its ops (create, migrate) are
    ``PoolOpsResource``'s."""

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.reader = services.pool_view
        self._json: dict[str, tuple[PoolDomain, str]] = {}  # each domain's JSON text

    def get(self, request: Request, **url_args: str) -> Reply | Response:
        if self.reader is None:
            raise NotFound("xend is not in a pool: its config names none "
                           "((xend-pool NAME) and (xend-pool-etcd 'URL ...'))")
        state = self.reader.read()
        if wanted(request.environ) is JSON:
            return Response(self._json_text(state), content_type=JSON_MIMETYPE)
        return Reply(state, shown=state.shown)

    def _json_text(self, state: PoolState) -> str:
        """``sxp_json.dumps(state.sxpr())``, from the domains' kept texts."""
        kept, texts = self._json, {}
        for domain in state.domains:
            known = kept.get(domain.name)
            texts[domain.name] = (domain, known[1] if known is not None and known[0] is domain
                                  else sxp_json.dumps(domain.sxpr()))
        self._json = texts
        # ends '"domains": []}}' (a collection: an array even when empty)
        without = sxp_json.dumps(replace(state, domains=()).sxpr())
        return f"{without[:-4]}[{', '.join(text for _, text in texts.values())}]}}}}"
