"""The control agent's wire format (pure); the agent side is images/agent.sh.

Request: ``<token> <script>\\n``, every script byte outside ``[A-Za-z0-9_./,:=+-]`` written
as a ``\\0ooo`` octal escape, which the agent's ``printf '%b'`` (a shell builtin: no process to
start) turns back into the byte. Reply:
``\\x1eB<token>\\x1e <stdout> \\x1eE<token>\\x1e <stderr> \\x1eX<token> <exit code>\\x1e``.
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


_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./,:=+-")
_ENCODED = [bytes([b]) if b in _SAFE else b"\\0%03o" % b for b in range(256)]


def encode_script(data: bytes) -> bytes:
    return b"".join(_ENCODED[b] for b in data)


def request(token: bytes, script: str | bytes) -> bytes:
    data = script.encode() if isinstance(script, str) else script
    return token + b" " + encode_script(data) + b"\n"


def begin_marker(token: bytes) -> bytes:
    return RS + b"B" + token + RS


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
