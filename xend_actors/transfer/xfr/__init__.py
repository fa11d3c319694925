"""The xfr protocol between two xends migrating a domain (facts §10.1, §10.2).

A connection carries SXP messages back to back; ``(xfr.pages ...)``, ``(xfr.state ...)``
and ``(xfr.data ...)`` are followed by the raw bytes they announce. The conversation::

    source                                   destination (relocation port)
    (xfr.hello 1 0)                    →
                                       ←     (xfr.err 0)          or (xfr.err CODE 'why')
    (xfr.xfr DOMID 'INFO' BYTES LIVE KIND 'META')
                                       →     INFO: the domain info SXP, as a string
                                       ←     (xfr.err 0)          name, memory, kind checked
    (xfr.pages FIRST COUNT) + pages    →     as often as needed (pre-copy rounds)
    (xfr.state SIZE SHA256) + state    →     SHA256 over every page byte sent, in order
                                       ←     (xfr.xfr.ok NEWID)   built, configured, paused
    (xfr.err 0)                        →     the source domain is destroyed: commit
                                       ←     (xfr.err 0)          it runs

KIND names the source's driver (``sim`` when absent); a destination with another driver
refuses the offer. A driver whose state is a stream (qemu) sends no pages and no state:
META describes its machine, the destination makes it (devices configured) before it
answers the offer, and the state follows as ``(xfr.data SIZE)`` + SIZE bytes, as often
as needed, ended by ``(xfr.data 0)``; then ``(xfr.xfr.ok NEWID)`` and the commit as above.

Either side may send ``(xfr.err CODE 'why')`` instead and close; a destination whose
connection breaks before the commit destroys what it built. Every read is bounded:
a message by ``MAX_MESSAGE`` bytes, a batch of pages by ``MAX_BATCH`` pages, the
state by ``MAX_STATE`` bytes, a piece of a stream by ``MAX_DATA``, and every wait by
the channel's timeout.

The protocol is apart from its I/O, as werkzeug keeps ``sansio/`` apart: the messages
and their bytes both ways (``messages.py``) and the decoder that cuts received bytes
into messages and the raw bytes after them (``decoder.py``) touch no socket; the
``Channel`` (``channel.py``) moves them over one, and ``pipes.py`` moves a stream
between a connection and a pipe. This package's namespace is the protocol's: callers
write ``xfr.Channel``, ``xfr.Pages``.
"""

from xend_actors.transfer.xfr.channel import Channel
from xend_actors.transfer.xfr.decoder import Decoder
from xend_actors.transfer.xfr.messages import (
    DEFAULT_PORT,
    MAX_BATCH,
    MAX_DATA,
    MAX_KIND,
    MAX_MESSAGE,
    MAX_REASON,
    MAX_STATE,
    OK,
    PAGE_SIZE,
    VERSION,
    Code,
    Data,
    Err,
    Hello,
    Message,
    Pages,
    State,
    Xfr,
    XfrError,
    XfrOk,
    encode,
    from_sxp,
    parse_destination,
    raw_size,
    to_sxp,
)
from xend_actors.transfer.xfr.pipes import open_pipe, write_all

__all__ = [
    "DEFAULT_PORT", "MAX_BATCH", "MAX_DATA", "MAX_KIND", "MAX_MESSAGE", "MAX_REASON",
    "MAX_STATE", "OK", "PAGE_SIZE", "VERSION", "Channel", "Code", "Data", "Decoder", "Err",
    "Hello", "Message", "Pages", "State", "Xfr", "XfrError", "XfrOk", "encode", "from_sxp",
    "open_pipe", "parse_destination", "raw_size", "to_sxp", "write_all",
]
