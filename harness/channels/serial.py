"""The control channel: the agent (images/agent.sh) on a console, driven with pexpect.

The transport is any file descriptor: in a guest, the host end of QEMU's virtio console socket;
in unit tests, a pty master with the same agent script running on the host.

A pump drains the transport into a pipe as soon as bytes arrive, and pexpect reads the pipe.
QEMU drops console output it cannot write at once (hw/char/virtio-console.c: flush_buf,
"silently dropping console data on EAGAIN" for a virtconsole), so a harness that is slow to
read, as on a loaded machine, lost whole 4 KiB buffers of a command's output (10 of a 1 MiB
output's 256, under two test suites at once). The pump keeps the socket empty; the pipe (1 MiB
where the kernel allows) holds what the harness has not read yet. The pump is a process of its
own, ``cat``: a thread of the harness still lost 8 of 256 buffers with a kernel build beside
two test suites (it ran only when it got the interpreter's lock), while a process the scheduler
wakes as soon as bytes arrive, and one that sleeps most of the time is woken first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
from typing import BinaryIO

import pexpect
from pexpect import fdpexpect

from ..deadline import Deadline
from ..errors import CommandTimeout, GuestError
from . import Result, framing

INTERRUPT_GRACE = 5.0  # seconds the agent gets to report an interrupted command
_F_SETPIPE_SZ = 1031  # fcntl.h (Linux)
PIPE_BYTES = 1 << 20
PUMP_EXIT = 5.0  # seconds the pump gets to see the end of file after close()


def _start_pump(source: int, sink: int) -> subprocess.Popen[bytes]:
    """``cat`` from ``source`` to ``sink``, both handed over (closed here). It ends at end of
    file (QEMU gone, or the socket shut down by :meth:`SerialShell.close`), or at its next write
    once nobody reads the pipe; it never outlives QEMU, which dies with the harness."""
    try:
        return subprocess.Popen(["cat"], stdin=source, stdout=sink, stderr=subprocess.DEVNULL,
                                close_fds=True)
    finally:
        for fd in (source, sink):
            with contextlib.suppress(OSError):
                os.close(fd)


class SerialShell:
    name = "serial"

    def __init__(self, fd: int, *, transcript: BinaryIO | None = None) -> None:
        self._fd = fd
        self._out, sink = os.pipe()
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
            fcntl.fcntl(sink, _F_SETPIPE_SZ, PIPE_BYTES)
        self._pump = _start_pump(os.dup(fd), sink)
        self._child = fdpexpect.fdspawn(self._out, timeout=None, maxread=1 << 16)
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
            stdout = self._collect(token, framing.stdout_end_marker(token), deadline, label)
        except CommandTimeout as exc:
            rest = self._interrupt(token, began, label)
            raise CommandTimeout(label, timeout, exc.partial + rest) from None
        stderr = self._collect(token, framing.exit_marker(token), deadline, label)
        code = self._expect(framing.RS, deadline, label)
        return Result(stdout, stderr, framing.parse_exit_code(code))

    def _interrupt(self, token: bytes, began: bool, command: str) -> bytes:
        """^C the overrunning command and resynchronise on its end markers; return what it
        wrote before it was stopped (the agent sends a command's output once it has ended).

        The ^C is repeated once: a signal that lands while the agent is between two steps of
        its loop can be absorbed without interrupting the wait.
        """
        out = b""
        for attempt in range(2):
            self._write(framing.INTERRUPT)
            grace = Deadline.after(INTERRUPT_GRACE / 2)
            try:
                if not began:
                    self._expect(framing.begin_marker(token), grace, command)
                    began = True
                out += self._collect(token, framing.stdout_end_marker(token), grace, command)
            except CommandTimeout as exc:
                out += exc.partial
                if attempt == 0:
                    continue
                self._broken = f"command {command!r} ignored the interrupt"
                return out
            break
        try:
            self._collect(token, framing.exit_marker(token), grace, command)
            self._expect(framing.RS, grace, command)
        except CommandTimeout:
            self._broken = f"the agent did not finish reporting {command!r}"
        return out

    def post(self, command: str) -> None:
        """Send a command without waiting for its reply (for one that ends the guest)."""
        self._write(framing.request(framing.new_token(), command))

    def _write(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            self._broken = f"write failed: {exc}"
            raise GuestError("control channel closed: the guest or QEMU is gone",
                             "see the console log") from exc

    def _collect(self, token: bytes, end: bytes, deadline: Deadline, command: str) -> bytes:
        """What comes before ``end``: the chunks of a long output joined, each acknowledged
        as it is read (the agent sends the next one then)."""
        parts: list[bytes] = []
        wait = framing.wait_marker(token)
        try:
            while True:
                found, before = self._expect_one((wait, end), deadline, command)
                parts.append(before)
                if found == 1:
                    return b"".join(parts)
                self._write(framing.ACK)
        except CommandTimeout as exc:
            raise CommandTimeout(command, deadline.remaining,
                                 b"".join(parts) + exc.partial) from None

    def _expect(self, marker: bytes, deadline: Deadline, command: str) -> bytes:
        return self._expect_one((marker,), deadline, command)[1]

    def _expect_one(self, markers: tuple[bytes, ...], deadline: Deadline, command: str
                    ) -> tuple[int, bytes]:
        """Which of ``markers`` came first, and what came before it."""
        try:
            found = self._child.expect_exact(list(markers), timeout=deadline.remaining)
        except pexpect.TIMEOUT:
            partial = self._child.before if isinstance(self._child.before, bytes) else b""
            raise CommandTimeout(command, deadline.remaining, partial) from None
        except (pexpect.EOF, OSError) as exc:  # EOF, or ECONNRESET when QEMU dies
            self._broken = "end of file"
            raise GuestError("control channel closed: the guest or QEMU is gone",
                             "see the console log") from exc
        before = self._child.before
        return int(found), before if isinstance(before, bytes) else b""

    def close(self) -> None:
        # A socket is shut down, which ends the pump's blocked read at once; a pty's pump ends
        # when its other side closes, or is killed.
        dup = os.dup(self._fd)
        try:
            with socket.socket(fileno=dup) as sock:
                dup = -1  # the socket object owns it now
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not a socket (a pty in the unit tests), or already gone
        finally:
            if dup >= 0:
                os.close(dup)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        with contextlib.suppress(OSError):
            os.close(self._out)  # a pump still copying stops at its next write
        try:
            self._pump.wait(timeout=PUMP_EXIT)
        except subprocess.TimeoutExpired:  # a pty whose other side is still open
            self._pump.kill()
            self._pump.wait()
