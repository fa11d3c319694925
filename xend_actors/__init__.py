"""xend-actors: Xen's xend node daemon, re-built on pykka actors.

The package owns everything of one host's domain management: the daemon, its HTTP
interface, the client library and the ``xm`` command line.
"""

__version__ = "0.1.0"
