"""The control channel: the agent (images/agent.sh) on a console, driven with pexpect.

The transport is any file descriptor: in a guest, the host end of QEMU's virtio console socket;
in unit tests, a pty master with the same agent script running on the host.
"""

from __future__ import annotations

import contextlib
import os
from typing import BinaryIO

import pexpect
from pexpect import fdpexpect

from ..deadline import Deadline
from ..errors import CommandTimeout, GuestError
from . import Result, framing

INTERRUPT_GRACE = 5.0  # seconds the agent gets to report an interrupted command


class SerialShell:
    name = "serial"

    def __init__(self, fd: int, *, transcript: BinaryIO | None = None) -> None:
        self._fd = fd
        self._child = fdpexpect.fdspawn(fd, timeout=None, maxread=1 << 16)
        self._child.logfile_read = transcript
        self._broken: str | None = None

    @property
    def broken(self) -> bool:
        """True once the channel cannot be trusted (EOF, or the agent ignored an interrupt)."""
        return self._broken is not None

    def wait_ready(self, deadline: Deadline) -> None:
        """Wait for the agent's greeting (sent once, when it starts)."""
        self._expect(framing.HELLO, deadline, "waiting for the control agent to start")

    def run(self, command: str | bytes, timeout: float = 60.0) -> Result:
        if self._broken:
            raise GuestError(f"control channel unusable: {self._broken}",
                             "the guest must be restarted")
        deadline = Deadline.after(timeout)
        label = command if isinstance(command, str) else command.decode(errors="replace")
        token = framing.new_token()
        self._write(framing.request(token, command))
        began = False
        try:
            self._expect(framing.begin_marker(token), deadline, label)
            began = True
            stdout = self._expect(framing.stdout_end_marker(token), deadline, label)
        except CommandTimeout as exc:
            self._interrupt(token, began, label)
            raise CommandTimeout(label, timeout, exc.partial) from None
        stderr = self._expect(framing.exit_marker(token), deadline, label)
        code = self._expect(framing.RS, deadline, label)
        return Result(stdout, stderr, framing.parse_exit_code(code))

    def _interrupt(self, token: bytes, began: bool, command: str) -> None:
        """^C the overrunning command and resynchronise on its end markers.

        The ^C is repeated once: a signal that lands while the agent is between two steps of
        its loop can be absorbed without interrupting the wait.
        """
        for attempt in range(2):
            self._write(framing.INTERRUPT)
            grace = Deadline.after(INTERRUPT_GRACE / 2)
            try:
                if not began:
                    self._expect(framing.begin_marker(token), grace, command)
                    began = True
                self._expect(framing.stdout_end_marker(token), grace, command)
            except CommandTimeout:
                if attempt == 0:
                    continue
                self._broken = f"command {command!r} ignored the interrupt"
                return
            break
        try:
            self._expect(framing.exit_marker(token), grace, command)
            self._expect(framing.RS, grace, command)
        except CommandTimeout:
            self._broken = f"the agent did not finish reporting {command!r}"

    def post(self, command: str) -> None:
        """Send a command without waiting for its reply (for one that ends the guest)."""
        self._write(framing.request(framing.new_token(), command))

    def _write(self, data: bytes) -> None:
        try:
            self._child.send(data)
        except OSError as exc:
            self._broken = f"write failed: {exc}"
            raise GuestError("control channel closed: the guest or QEMU is gone",
                             "see the console log") from exc

    def _expect(self, marker: bytes, deadline: Deadline, command: str) -> bytes:
        try:
            self._child.expect_exact(marker, timeout=deadline.remaining)
        except pexpect.TIMEOUT:
            partial = self._child.before if isinstance(self._child.before, bytes) else b""
            raise CommandTimeout(command, deadline.remaining, partial) from None
        except (pexpect.EOF, OSError) as exc:  # EOF, or ECONNRESET when QEMU dies
            self._broken = "end of file"
            raise GuestError("control channel closed: the guest or QEMU is gone",
                             "see the console log") from exc
        before = self._child.before
        return before if isinstance(before, bytes) else b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
