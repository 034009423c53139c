"""The control agent's wire format (pure); the agent side is images/agent.sh.

Request: ``<token> <script>\\n``, the script's printable ASCII as it is and every other byte,
a backslash, and a space at either end (``read`` would strip it) written as a ``\\0ooo`` octal
escape, which the agent's ``printf '%b'`` (a shell builtin: no process to start) turns back into
the byte. The agent's ``read`` takes a line a byte at a time, so a short request is a fast
one. Reply:
``\\x1eB<token>\\x1e <stdout> \\x1eE<token>\\x1e <stderr> \\x1eX<token> <exit code>\\x1e``,
where an output longer than 64 KiB comes in chunks with ``\\x1eW<token>\\x1e`` between them,
each waiting for the harness's newline (:data:`ACK`) before the next.
The token is random per command and the request never carries a raw ``\\x1e``, so neither an
echo of the request nor the command's own output can forge a marker.
"""

from __future__ import annotations

import secrets

RS = b"\x1e"
HELLO = RS + b"HELLO" + RS
INTERRUPT = b"\x03"  # VINTR: the agent's tty turns it into SIGINT


def new_token() -> bytes:
    return secrets.token_hex(8).encode()


_ENCODED = [bytes([b]) if 0x20 <= b < 0x7F and b != 0x5C else b"\\0%03o" % b
            for b in range(256)]
_SPACE = b"\\0040"


def encode_script(data: bytes) -> bytes:
    body = b"".join(_ENCODED[b] for b in data)
    # read(1) strips leading and trailing blanks of the last field: keep them as escapes.
    lead = len(body) - len(body.lstrip(b" "))
    trail = len(body) - len(body.rstrip(b" "))
    if lead == len(body):
        return _SPACE * lead
    return _SPACE * lead + body[lead:len(body) - trail] + _SPACE * trail


def request(token: bytes, script: str | bytes) -> bytes:
    data = script.encode() if isinstance(script, str) else script
    return token + b" " + encode_script(data) + b"\n"


def begin_marker(token: bytes) -> bytes:
    return RS + b"B" + token + RS


ACK = b"\n"  # the harness has read everything so far: the agent sends its next chunk


def wait_marker(token: bytes) -> bytes:
    """Between two chunks of a long output: the agent waits for :data:`ACK`."""
    return RS + b"W" + token + RS


def stdout_end_marker(token: bytes) -> bytes:
    return RS + b"E" + token + RS


def exit_marker(token: bytes) -> bytes:
    """Followed by the decimal exit code and a closing RS."""
    return RS + b"X" + token + b" "


def parse_exit_code(field: bytes) -> int:
    text = field.decode("ascii", errors="replace").strip()
    if not text.isdigit():
        raise ValueError(f"malformed exit code field {field!r}")
    return int(text)
