"""SSH to the guest's dropbear through paramiko, on a port QEMU forwards on 127.0.0.1 only.

The client key is generated per guest and handed to the guest on its kernel command line; the
server's host key is known in advance (the image carries it), so the connection is verified.
"""

from __future__ import annotations

import base64
import io
import select
import time

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..deadline import Deadline
from ..errors import CommandTimeout, GuestError
from . import Result

CONNECT_RETRY = 0.2  # seconds between attempts while dropbear is still starting


def generate_client_pem() -> str:
    """A new Ed25519 private key, in OpenSSH's PEM form (what a saved guest keeps)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()


def client_key(pem: str) -> paramiko.Ed25519Key:
    return paramiko.Ed25519Key(file_obj=io.StringIO(pem))


def public_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


class SSHShell:
    name = "ssh"

    def __init__(self, port: int, key: paramiko.PKey, host_key: str,
                 host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self._key = key
        kind, blob = host_key.split()[:2]
        self._host_key = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
        self._client: paramiko.SSHClient | None = None

    def connect(self, deadline: Deadline) -> None:
        """Connect, retrying while the guest's dropbear is not up yet."""
        last: Exception | None = None
        while not deadline.expired:
            client = paramiko.SSHClient()
            client.get_host_keys().add(f"[{self.host}]:{self.port}", self._host_key.get_name(),
                                       self._host_key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            budget = max(0.5, min(5.0, deadline.remaining))
            try:
                client.connect(self.host, self.port, username="root", pkey=self._key,
                               look_for_keys=False, allow_agent=False, timeout=budget,
                               banner_timeout=budget, auth_timeout=budget)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                client.close()
                last = exc
                if isinstance(exc, paramiko.BadHostKeyException):
                    break
                time.sleep(min(CONNECT_RETRY, deadline.remaining))
                continue
            self._client = client
            return
        raise GuestError(f"SSH to {self.host}:{self.port} failed: {last}",
                         "check that dropbear started (console log, 'harness-init' lines)")

    def run(self, command: str, timeout: float = 60.0) -> Result:
        if self._client is None:
            raise GuestError("SSH is not connected", "call connect() first")
        deadline = Deadline.after(timeout)
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise GuestError("SSH connection lost: the guest or QEMU is gone",
                             "see the console log")
        try:
            chan = transport.open_session(timeout=max(0.1, deadline.remaining))
            chan.exec_command(command)
        except (paramiko.SSHException, OSError) as exc:
            raise GuestError(f"SSH session failed: {exc}", "see the console log") from exc
        out, err = bytearray(), bytearray()
        try:
            while True:
                if chan.recv_ready():
                    out += chan.recv(1 << 16)
                    continue
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                    continue
                if chan.exit_status_ready() and chan.eof_received:
                    break
                if deadline.expired:
                    raise CommandTimeout(command, timeout, bytes(out))
                select.select([chan], [], [], min(deadline.remaining, 1.0))
                if chan.closed and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
            code = chan.recv_exit_status()
        except OSError as exc:
            raise GuestError(f"SSH connection lost: {exc}", "see the console log") from exc
        finally:
            chan.close()
        return Result(bytes(out), bytes(err), code)

    def interactive(self) -> paramiko.Channel:
        """A login shell on a pty, for `iommu-harness shell`."""
        if self._client is None:
            raise GuestError("SSH is not connected", "call connect() first")
        return self._client.invoke_shell(term="xterm")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
