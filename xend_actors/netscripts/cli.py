"""Argument words (``op key=value ...``) and the one-line-error main wrapper."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from pyroute2.netlink.exceptions import NetlinkError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_ABSENT = 0, 1, 2, 3


class ScriptError(Exception):
    """A failure reported as one line on stderr; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def parse(argv: Sequence[str], ops: Sequence[str], keys: Sequence[str],
          options: Sequence[str] = ()) -> tuple[str, dict[str, str]]:
    """``op key=value ...`` (values may keep the original's quotes) -> (op, values).

    ``options`` are ``--name VALUE`` / ``--name=VALUE`` options, stored as ``name``.
    """
    op: str | None = None
    values: dict[str, str] = {}
    words = list(argv)
    while words:
        word = words.pop(0)
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            if name not in options:
                raise ScriptError(f"unknown option --{name}", EXIT_USAGE)
            if not eq:
                if not words:
                    raise ScriptError(f"--{name} needs a value", EXIT_USAGE)
                value = words.pop(0)
            values[name] = value
        elif "=" in word:
            key, _, value = word.partition("=")
            if key not in keys:
                raise ScriptError(f"unknown argument {key}= (known: {', '.join(keys)})",
                                  EXIT_USAGE)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key] = value
        elif op is None:
            op = word
        else:
            raise ScriptError(f"unexpected argument {word!r}", EXIT_USAGE)
    if op is None or op not in ops:
        raise ScriptError(f"usage: {' | '.join(ops)} [key=value ...]", EXIT_USAGE)
    return op, values


def yes_no(value: str, name: str) -> bool:
    low = value.lower()
    if low in ("yes", "1", "on", "true"):
        return True
    if low in ("no", "0", "off", "false"):
        return False
    raise ScriptError(f"{name}= must be yes or no, not {value!r}", EXIT_USAGE)


def run(prog: str, main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; any failure becomes one line on stderr and a non-zero status."""
    try:
        return main(list(sys.argv[1:] if argv is None else argv))
    except ScriptError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return e.code
    except NetlinkError as e:
        print(f"{prog}: netlink error {e.code}: {e.args[1] if len(e.args) > 1 else e}",
              file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_FAIL
    except Exception as e:  # one line, whatever it is
        text = " ".join(str(e).split()) or type(e).__name__
        print(f"{prog}: {type(e).__name__}: {text}", file=sys.stderr)
        return EXIT_FAIL
