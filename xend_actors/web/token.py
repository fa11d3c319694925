"""The ``/xend/token`` resources: API tokens made, listed and deleted (admins only).

``GET /xend/token/`` lists the tokens (name, role, when made; never a secret);
``POST op=create name=N [role=viewer]`` answers 201 with ``(token (name N) (role R)
(secret TEXT))``, the only time the secret is ever shown; ``POST /xend/token/<name>
op=delete`` removes it, and the token stops working at once.
"""

from __future__ import annotations

from werkzeug import Request

from xend_actors import sxp
from xend_actors.access.identity import Role
from xend_actors.access.tokens import Tokens
from xend_actors.errors import BadRequest
from xend_actors.web.forms import Kind, Param, optional
from xend_actors.web.resource import Reply, Resource, op


class TokenDirResource(Resource):
    """``/xend/token/``: every token; ``create``."""

    admin_only = True

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    def get(self, request: Request, **url_args: str) -> sxp.Value:
        return [info.sxpr() for info in self.tokens.infos()]

    @op("create", params=(Param("name", Kind.STR), optional("role", Kind.STR, "admin")),
        status=201)
    def create(self, request: Request, name: str, role: str) -> Reply:
        try:
            chosen = Role(role)
        except ValueError:
            raise BadRequest(f"Invalid role {role!r}: admin or viewer") from None
        secret = self.tokens.create(name, chosen)
        return Reply(["token", ["name", name], ["role", chosen.value], ["secret", secret]],
                     201, location=f"{request.host_url}xend/token/{name}")


class TokenResource(Resource):
    """``/xend/token/<name>``: one token's info; ``delete``."""

    admin_only = True

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    def get(self, request: Request, name: str) -> sxp.Value:
        return self.tokens.info(name).sxpr()

    @op("delete")
    def delete(self, request: Request, name: str) -> str:
        self.tokens.delete(name)
        return "0"
