"""The control channel's framing, end to end against the real agent script (images/agent.sh)
running under busybox sh on a host pty: the same bytes the guest's virtio console carries."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.channels import framing
from harness.channels.serial import SerialShell
from harness.deadline import Deadline
from harness.errors import CommandTimeout, GuestError
from harness.image import IMAGES_DIR
from harness.qemu import default_signals


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[SerialShell]:
    busybox = shutil.which("busybox")
    assert busybox, "busybox is installed by make deps"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [busybox, "setsid", "-c", busybox, "sh", str(IMAGES_DIR / "agent.sh")],
        stdin=slave, stdout=slave, stderr=slave,
        env={"HARNESS_TMP": str(tmp_path), "PATH": os.environ["PATH"]},
        # The agent relies on SIGINT as in the guest, however pytest was started.
        preexec_fn=default_signals)  # noqa: PLW1509
    os.close(slave)
    sh = SerialShell(master)
    sh.wait_ready(Deadline.after(10))
    yield sh
    proc.kill()
    proc.wait()
    sh.close()


def test_exit_code_stdout_and_stderr_come_back_separately(shell: SerialShell) -> None:
    r = shell.run("echo out; echo err >&2; exit 3")
    assert (r.stdout, r.stderr, r.exit_code) == (b"out\n", b"err\n", 3)


def test_output_without_trailing_newline(shell: SerialShell) -> None:
    assert shell.run("printf 'no newline'").stdout == b"no newline"


def test_empty_output(shell: SerialShell) -> None:
    r = shell.run("true")
    assert (r.stdout, r.stderr, r.exit_code) == (b"", b"", 0)


def test_marker_like_text_is_output_not_framing(shell: SerialShell) -> None:
    tricky = r"printf '\036E0000\036 \036X1234 9\036 \036HELLO\036 \036B\036'"
    r = shell.run(tricky)
    assert r.stdout == b"\x1eE0000\x1e \x1eX1234 9\x1e \x1eHELLO\x1e \x1eB\x1e"
    assert r.exit_code == 0


def test_binary_bytes_pass_untouched(shell: SerialShell) -> None:
    r = shell.run(r"printf '\000\001\002\r\n\003\177\377'")
    assert r.stdout == b"\x00\x01\x02\r\n\x03\x7f\xff"


def test_one_megabyte_of_output(shell: SerialShell) -> None:
    r = shell.run("i=0; while [ $i -lt 16384 ]; do "
                  "echo 0123456789abcdef0123456789abcdef0123456789abcdef012345678901234; "
                  "i=$((i + 1)); done", timeout=120)
    assert len(r.stdout) == 16384 * 64
    assert r.stdout.count(b"\n") == 16384


def test_quotes_and_multiline_scripts(shell: SerialShell) -> None:
    r = shell.run("a='it'\"'\"'s'\nif [ \"$a\" = \"it's\" ]; then echo same; fi\n")
    assert r.stdout == b"same\n"


@pytest.mark.parametrize("size", [65536, 65537, 3 * 65536, 200_000])
def test_a_long_output_comes_in_acknowledged_chunks(shell: SerialShell, size: int) -> None:
    # Longer than one chunk: the agent waits for the harness between chunks (a console drops
    # what its socket cannot take), the harness joins them; stderr alike.
    r = shell.run(f"head -c {size} /dev/zero | tr '\\000' x; head -c {size} /dev/zero >&2")
    assert (r.stdout, r.stderr, r.exit_code) == (b"x" * size, b"\0" * size, 0)
    assert shell.run("echo next").stdout == b"next\n"


def test_a_command_that_times_out_is_interrupted_and_the_shell_recovers(
        shell: SerialShell) -> None:
    with pytest.raises(CommandTimeout) as info:
        shell.run("echo started; sleep 60", timeout=1.0)
    assert info.value.partial == b"started\n"
    assert shell.run("echo after").stdout == b"after\n"


def test_a_command_ignoring_sigint_is_still_killed(shell: SerialShell) -> None:
    with pytest.raises(CommandTimeout):
        shell.run("trap '' INT; sleep 60", timeout=1.0)
    assert shell.run("echo alive").exit_code == 0


def test_each_command_gets_a_fresh_shell(shell: SerialShell) -> None:
    shell.run("cd /; X=1")
    assert shell.run("echo ${X:-unset}").stdout == b"unset\n"


def test_a_dead_agent_is_a_guest_error_not_a_hang(shell: SerialShell) -> None:
    with pytest.raises(GuestError) as info:
        shell.run("kill -9 $$", timeout=5)  # in the command's subshell $$ is the agent
        shell.run("echo never", timeout=5)
    assert not isinstance(info.value, CommandTimeout)
    with pytest.raises(GuestError, match="unusable"):
        shell.run("echo never", timeout=5)


def test_every_byte_of_a_script_survives_the_encoding(shell: SerialShell) -> None:
    # A script that writes its own text (minus NUL, which a shell script cannot hold) back.
    payload = bytes(b for b in range(1, 256) if b not in b"'\n")
    r = shell.run(b"printf '%s' '" + payload + b"'")
    assert r.stdout == payload


def test_the_encoded_request_holds_no_marker_byte_and_is_one_line() -> None:
    line = framing.request(b"tok", bytes(range(256)))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert framing.RS not in line
    assert all(0x20 <= b < 0x7F for b in line[:-1])


@pytest.mark.parametrize("script", [b"  lead", b"trail  ", b"   ", b" a b ", b"\\", b""])
def test_blanks_at_either_end_and_backslashes_survive(shell: SerialShell,
                                                      script: bytes) -> None:
    r = shell.run(b"printf '%s' '" + script + b"'")
    assert r.stdout == script
