"""The debug port's line protocol, without sockets: bytes in, requests out; results in,
reply forms out (facts §11.3).

A line holds one or more whole requests, each an SXP form ``(OP ARG ...)`` or a bare
word; the op's dots and underscores are alike (``log.stderr`` = ``log_stderr``), and
xend.tex's ``traceon`` / ``traceoff`` are ``(trace on)`` / ``(trace off)``. After bad SXP
the line gets one error and the rest of it is skipped; a line longer than
``MAX_REQUEST`` bytes gets one error and is skipped. Replies are ``(ok RESULT)``, or
``(ok)``, or ``(err (type T) (value V))``.

``ROOT_ONLY`` names the ops that change xend or show its insides: only root over the
debug socket may ask them; a TCP client (``xend-debug-tcp``) is refused them.
"""

from __future__ import annotations

from xend_actors import sxp
from xend_actors.errors import BadRequest, XendError

MAX_REQUEST = 64 * 1024  # bytes of one line of requests
MAX_DEPTH = 32

# Plain-line commands of xend.tex that are not simply an op's name.
_PLAIN = {"traceon": ("trace", "on"), "traceoff": ("trace", "off")}

# What changes xend or shows its insides, as against reading what any viewer of the HTTP
# API sees (help, info, events) and the connection's own settings (pretty, quit):
# exit stops xend; trace writes every call in xend to a file; log.stderr, debug.msg and
# debug.controller change its logging; sys.inject puts events of any name on the bus
# (to every subscriber, the event log and the notify URLs); console.disconnect drops
# another client's console; sys.modules lists the modules xend has imported.
ROOT_ONLY = frozenset({"exit", "trace", "log.stderr", "debug.msg", "debug.controller",
                       "sys.inject", "console.disconnect", "sys.modules"})


class RequestReader:
    """Cuts one client's bytes into lines, and lines into requests or errors to reply with."""

    def __init__(self, max_size: int = MAX_REQUEST, max_depth: int = MAX_DEPTH) -> None:
        self.max_size = max_size
        self.max_depth = max_depth
        self._buffer = bytearray()  # the start of a line
        self._skipping = False  # the rest of an oversized line is thrown away

    def feed(self, data: bytes) -> list[sxp.Value | BadRequest]:
        """The requests on the lines ``data`` completes; errors in place of bad ones."""
        *ends, rest = data.split(b"\n")
        results: list[sxp.Value | BadRequest] = []
        for end in ends:
            line = bytes(self._buffer) + end
            self._buffer.clear()
            if self._skipping:
                self._skipping = False
            elif len(line) > self.max_size:
                results.append(self._too_long())
            else:
                results += self._parse(line)
        if not self._skipping:
            self._buffer += rest
            if len(self._buffer) > self.max_size:
                results.append(self._too_long())
                self._skipping = True
                self._buffer.clear()
        return results

    def _too_long(self) -> BadRequest:
        return BadRequest(f"line longer than {self.max_size} bytes")

    def _parse(self, line: bytes) -> list[sxp.Value | BadRequest]:
        """Every form on ``line``; after bad SXP, an error and nothing more."""
        parser = sxp.Parser(max_depth=self.max_depth, max_size=self.max_size)
        error = None
        try:
            parser.input(line)
            parser.input_eof()
        except sxp.ParseError as e:
            error = e
        results: list[sxp.Value | BadRequest] = []
        while parser.ready():
            results.append(parser.get_val())
        if error is not None:
            reason = error.reason
            if reason == "unexpected EOF":
                reason = "the line ends inside a form"
            results.append(BadRequest(f"bad SXP at column {error.column}: {reason}"))
        return results


def normalize(request: sxp.Value) -> list[sxp.Value]:
    """The request as ``[OP, ARG...]`` with the op's canonical (dotted) name."""
    if isinstance(request, str):
        return list(_PLAIN.get(request, (request,)))
    if not request or not isinstance(request[0], str):
        raise BadRequest("expected (OP ARG ...) or a plain command such as help")
    return [request[0].replace("_", "."), *request[1:]]


def on_off(form: list[sxp.Value]) -> bool:
    if len(form) != 2 or form[1] not in ("on", "off"):
        raise BadRequest(f"expected ({form[0]} on) or ({form[0]} off)")
    return form[1] == "on"


def error_sxpr(error: Exception) -> sxp.Value:
    value = error.message if isinstance(error, XendError) else str(error)
    return ["err", ["type", type(error).__name__], ["value", value]]


def reply(result: sxp.Value | None) -> sxp.Value:
    """The reply to a request that succeeded: ``(ok RESULT)``, or ``(ok)`` for nothing."""
    return ["ok"] if result is None else ["ok", result]
