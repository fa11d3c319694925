"""Op dispatch, argument decoding, errors and negotiation of the WSGI app (facts §4)."""

from __future__ import annotations

import pytest
from werkzeug import Request
from werkzeug.test import Client

from tests.support.gates import open_gate
from xend_actors import sxp
from xend_actors.errors import Conflict
from xend_actors.web.app import KEPT_PATH, MAX_BODY_BYTES, XendApp, framing_refusal
from xend_actors.web.forms import Kind, Param, optional
from xend_actors.web.resource import Reply, Resource, op


class Thing(Resource):
    """A resource with one op of every kind of parameter."""

    @op("echo", params=(Param("word"), Param("count", Kind.INT), Param("config", Kind.SXPR)))
    def echo(self, request: Request, name: str, word: str, count: int,
             config: sxp.Value) -> sxp.Value:
        return [name, word, str(count), config]

    @op("accept", status=202)
    def accept(self, request: Request, name: str) -> Reply:
        return Reply("0", location=f"/xend/thing/{name}")

    @op("clash")
    def clash(self, request: Request, name: str) -> None:
        raise Conflict(f"vm name clash: {name}")

    @op("peek", "glance", params=(optional("how", default="quickly"),), on_get=True)
    def peek(self, request: Request, name: str, how: str) -> sxp.Value:
        return ["peeked", name, how]

    def get(self, request: Request, name: str) -> sxp.Value:
        return ["thing", name]


@pytest.fixture
def client() -> Client:
    return Client(open_gate(XendApp([("/xend/thing/<name>", Thing())])))


def body(response) -> sxp.Value:  # type: ignore[no-untyped-def]
    assert response.headers["Content-Type"] == "application/sxp"
    return sxp.parse(response.get_data(as_text=True))


def test_get_shows_the_resource_with_or_without_slash(client: Client) -> None:
    assert body(client.get("/xend/thing/a")) == ["thing", "a"]
    assert body(client.get("/xend/thing/a/")) == ["thing", "a"]


def test_post_runs_the_op_with_typed_params(client: Client) -> None:
    reply = client.post("/xend/thing/a", data={"op": "echo", "word": "hi", "count": " 7",
                                                "config": "(vm (name x))"})
    assert reply.status_code == 200
    assert body(reply) == ["a", "hi", "7", ["vm", ["name", "x"]]]


def test_params_may_come_in_the_query_string(client: Client) -> None:
    reply = client.post("/xend/thing/a?op=echo&word=w&count=1&config=x")
    assert body(reply) == ["a", "w", "1", "x"]


def test_multipart_file_part_is_the_value(client: Client) -> None:
    from io import BytesIO

    reply = client.post("/xend/thing/a", data={
        "op": "echo", "word": "w", "count": "2",
        "config": (BytesIO(b"(vm (name up))"), "config.sxp", "application/octet-stream"),
    })
    assert body(reply) == ["a", "w", "2", ["vm", ["name", "up"]]]


@pytest.mark.parametrize(("data", "status", "message"), [
    ({}, 406, "Invalid request"),
    ({"op": ["echo", "echo"]}, 406, "Invalid request"),
    ({"op": "fly"}, 501, "Operation not implemented: fly"),
    ({"op": "echo", "count": "1", "config": "x"}, 400, "Missing parameter: word"),
    ({"op": "echo", "word": ["a", "b"], "count": "1", "config": "x"}, 400,
     "Too many values for word"),
    ({"op": "echo", "word": "a", "count": "abc", "config": "x"}, 400,
     "invalid literal for int() in count: 'abc': give a whole number"),
    ({"op": "echo", "word": "a", "count": "1", "config": "a b"}, 400,
     "config: expected one s-expression, got 2"),
    ({"op": "clash"}, 409, "vm name clash: a"),
])
def test_bad_requests_get_status_reason_and_xend_err(
    client: Client, data: dict, status: int, message: str
) -> None:
    reply = client.post("/xend/thing/a", data=data)
    assert reply.status_code == status
    assert reply.status == f"{status} {message}"
    assert body(reply) == ["xend.err", message]


def test_parse_error_in_sxpr_param_names_line_and_column(client: Client) -> None:
    reply = client.post("/xend/thing/a", data={"op": "echo", "word": "a", "count": "1",
                                               "config": "(vm\n (name x)"})
    assert reply.status_code == 400
    assert body(reply)[1].startswith("line ")


def test_op_status_and_location(client: Client) -> None:
    reply = client.post("/xend/thing/a", data={"op": "accept"})
    assert reply.status_code == 202
    assert reply.headers["Location"] == "/xend/thing/a"


def test_get_runs_only_ops_marked_for_get(client: Client) -> None:
    assert body(client.get("/xend/thing/a?op=peek")) == ["peeked", "a", "quickly"]
    assert body(client.get("/xend/thing/a?op=clash")) == ["thing", "a"]


def test_an_op_may_have_aliases_and_optional_params(client: Client) -> None:
    reply = client.post("/xend/thing/a", data={"op": "glance", "how": "slowly"})
    assert body(reply) == ["peeked", "a", "slowly"]


def test_each_path_is_answered_for_itself_however_often_it_is_asked(client: Client) -> None:
    """Route matches are kept (``XendApp._match``): asked again, a path names its own
    resource still, a long path (never kept) too, and a GET of the op a POST ran."""
    long_name = "n" * (KEPT_PATH + 1)
    for _ in range(2):
        for name in ("a", "b", long_name):
            assert body(client.get(f"/xend/thing/{name}")) == ["thing", name]
            assert body(client.get(f"/xend/thing/{name}?op=peek")) == ["peeked", name, "quickly"]
            reply = client.post(f"/xend/thing/{name}", data={"op": "glance", "how": "slowly"})
            assert body(reply) == ["peeked", name, "slowly"]
        assert client.get("/xend/other").status_code == 404


def test_other_methods_are_405(client: Client) -> None:
    assert client.delete("/xend/thing/a").status_code == 405


def test_unknown_path_is_404(client: Client) -> None:
    reply = client.get("/xend/other")
    assert reply.status_code == 404
    assert sxp.name(body(reply)) == "xend.err"


def test_oversized_body_is_refused_with_413(client: Client) -> None:
    reply = client.post("/xend/thing/a", data={"op": "echo", "word": "x" * MAX_BODY_BYTES})
    assert reply.status_code == 413
    assert sxp.name(body(reply)) == "xend.err"


def test_reason_phrase_cannot_inject_headers(client: Client) -> None:
    reply = client.post("/xend/thing/a%0D%0AX-Evil:%201", data={"op": "clash"})
    assert "X-Evil" not in reply.headers
    assert "\r" not in reply.status and "\n" not in reply.status


def test_browser_post_without_form_token_is_refused(client: Client) -> None:
    # Browser forms are tested in test_web_csrf.py; a bare POST is refused before the op.
    reply = client.post("/xend/thing/a", data={"op": "clash"},
                        headers={"User-Agent": "Mozilla/5.0", "Accept": "text/html"})
    assert reply.status_code == 403
    assert reply.mimetype == "text/html"


def test_browser_page_escapes_values(client: Client) -> None:
    reply = client.get("/xend/thing/<script>", headers={"User-Agent": "Mozilla/5.0",
                                                       "Accept": "text/html"})
    page = reply.get_data(as_text=True)
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_post_to_a_resource_without_ops_is_405() -> None:
    client = Client(open_gate(XendApp([("/xend/dir/", Resource())])))
    reply = client.post("/xend/dir/", data={"op": "anything"})
    assert reply.status_code == 405
    assert body(reply) == ["xend.err", "Method not allowed: POST to /xend/dir/"]


@pytest.mark.parametrize(("environ", "refused"), [
    ({"CONTENT_LENGTH": "5", "HTTP_TRANSFER_ENCODING": "chunked"}, "both Content-Length"),
    ({"CONTENT_LENGTH": "5,6"}, "invalid Content-Length"),
    ({"CONTENT_LENGTH": "-1"}, "invalid Content-Length"),
    ({"HTTP_TRANSFER_ENCODING": "gzip, chunked"}, "unsupported Transfer-Encoding"),
    ({"CONTENT_LENGTH": "12"}, None),
    ({"CONTENT_LENGTH": ""}, None),
    ({"HTTP_TRANSFER_ENCODING": "Chunked"}, None),
    ({}, None),
])
def test_a_body_of_ambiguous_length_is_refused(environ: dict, refused: str | None) -> None:
    refusal = framing_refusal(environ)  # type: ignore[arg-type]
    assert (refusal is None) if refused is None else (refused in (refusal or "")), refusal


def test_the_refusal_closes_the_connection(client: Client) -> None:
    reply = client.post("/xend/thing/a", data="0\r\n\r\n",
                        headers={"Transfer-Encoding": "chunked", "Content-Length": "5"})
    assert reply.status_code == 400
    assert reply.headers["Connection"] == "close"
