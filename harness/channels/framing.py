"""The control agent's wire format (pure); the agent side is images/agent.sh.

Request: ``<token> <base64 of the script>\\n``. Reply:
``\\x1eB<token>\\x1e <stdout> \\x1eE<token>\\x1e <stderr> \\x1eX<token> <exit code>\\x1e``.
The token is random per command and the request carries the script only in base64, which has no
``\\x1e``, so neither an echo of the request nor the command's own output can forge a marker.
"""

from __future__ import annotations

import base64
import secrets

RS = b"\x1e"
HELLO = RS + b"HELLO" + RS
INTERRUPT = b"\x03"  # VINTR: the agent's tty turns it into SIGINT


def new_token() -> bytes:
    return secrets.token_hex(8).encode()


def request(token: bytes, script: str | bytes) -> bytes:
    data = script.encode() if isinstance(script, str) else script
    return token + b" " + base64.b64encode(data) + b"\n"


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
