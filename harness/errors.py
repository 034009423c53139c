"""The harness's exceptions: each names the problem and, where there is one, the fix.

The CLI prints ``str(exc)`` as one line; helpers never exit the process themselves.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""

    exit_code = 2

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} ({fix})" if fix else problem)


class ConfigError(HarnessError):
    """A user input (option, topology file, path) is wrong."""


class KernelError(HarnessError):
    """A kernel cannot be fetched, unpacked or used on the chosen platform."""


class BuildError(KernelError):
    """A kernel source tree did not configure or build (for bisect: a commit to skip)."""

    def __init__(self, problem: str, fix: str = "", *, log: str = "") -> None:
        super().__init__(problem, fix)
        self.log = log


class HostToolError(HarnessError):
    """A host program the harness needs is missing or failed."""


class AccelError(HarnessError):
    """The requested accelerator does not work on this host."""


class BootError(HarnessError):
    """QEMU did not start, or the guest did not reach its control shell."""

    def __init__(self, problem: str, fix: str = "", *, argv: tuple[str, ...] = (),
                 console_tail: str = "") -> None:
        super().__init__(problem, fix)
        self.argv = argv
        self.console_tail = console_tail


class GuestError(HarnessError):
    """The guest stopped answering, died, or a channel to it broke."""


class GuestDied(GuestError):
    """The guest went away under a command: a panic, or QEMU exited or was killed."""

    def __init__(self, problem: str, fix: str = "", *, events: tuple[object, ...] = (),
                 console_tail: str = "") -> None:
        super().__init__(problem, fix)
        self.events = events
        self.console_tail = console_tail


class GuestHung(GuestError):
    """The guest stopped answering; the harness killed QEMU."""

    def __init__(self, problem: str, fix: str = "", *, console_tail: str = "") -> None:
        super().__init__(problem, fix)
        self.console_tail = console_tail


class CommandTimeout(GuestError):
    """A guest command did not finish before its deadline."""

    def __init__(self, command: str, timeout: float, partial: bytes = b"") -> None:
        shown = repr(command) if len(command) < 160 else f"{command[:160]!r}..."
        super().__init__(f"guest command timed out after {timeout:.1f}s: {shown}",
                         "raise the timeout, or check the guest console log")
        self.command = command
        self.timeout = timeout
        self.partial = partial
