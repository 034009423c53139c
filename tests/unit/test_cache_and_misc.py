"""The cache (concurrency, failure), the SSH port parser, the deadline, and CLI errors."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import cache
from harness.cli import command_line
from harness.deadline import Deadline
from harness.guest import parse_forwarded_port
from harness.hostcmd import failure_lines
from tests.conftest import DATA


def test_cache_root_follows_the_environment(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.ENV_CACHE, str(tmp_path / "c"))
    assert cache.cache_root() == tmp_path / "c"
    assert (tmp_path / "c").is_dir()


def _build_slowly(final: str, counter: str) -> None:
    def build(tmp: Path) -> None:
        with open(counter, "a") as f:
            f.write("built\n")
        time.sleep(0.3)
        (tmp / "payload").write_text("ok")

    cache.ensure_dir(Path(final), build)


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    final, counter = tmp_path / "entry", tmp_path / "count"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_build_slowly, args=(str(final), str(counter)))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(10)
    assert all(p.exitcode == 0 for p in procs)
    assert counter.read_text() == "built\n"
    assert (final / "payload").read_text() == "ok"


def test_a_failed_build_publishes_nothing(tmp_path: Path) -> None:
    def boom(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.ensure_dir(tmp_path / "e", boom)
    assert not (tmp_path / "e").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["e.lock"]
    with pytest.raises(RuntimeError):
        cache.ensure_file(tmp_path / "f", lambda t: (_ for _ in ()).throw(RuntimeError("x")))
    assert not (tmp_path / "f").exists()


def test_digest_is_unambiguous() -> None:
    assert cache.digest(["ab", "c"]) != cache.digest(["a", "bc"])
    assert cache.digest(["x"]) == cache.digest([b"x"])


@pytest.mark.parametrize("name", ["info-usernet-6.1.txt", "info-usernet-6.12.txt"])
def test_forwarded_port_from_real_qemu_output(name: str) -> None:
    port = parse_forwarded_port((DATA / name).read_text(), guest_port=22)
    assert port is not None and 1024 <= port < 65536
    assert parse_forwarded_port((DATA / name).read_text(), guest_port=23) is None


def test_deadline() -> None:
    d = Deadline.after(10)
    assert 9 < d.remaining <= 10 and not d.expired
    assert d.sooner(1).remaining <= 1
    assert Deadline.after(-1).remaining == 0 and Deadline.after(-1).expired


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})}, check=False)


@pytest.mark.parametrize(("args", "needle"), [
    (["groups", "--topology", "/nonexistent.toml"], "cannot read topology file"),
    (["boot", "--kernel", "debian:latest", "--", "true"], "'debian:latest' is not a Debian "
                                                          "kernel spec"),
    (["boot", "--kernel", "/nonexistent/bzImage", "--", "true"], "does not exist"),
])
def test_cli_bad_input_is_one_clear_line(args: list[str], needle: str, tmp_path: Path) -> None:
    proc = cli(*args, "--out", str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iommu-harness: error: ")
    assert needle in lines[0]


def test_cli_malformed_topology(tmp_path: Path) -> None:
    topo = tmp_path / "t.toml"
    topo.write_text('[[device]]\nid = "e"\nslot = 0x19\n')
    proc = cli("groups", "--topology", str(topo), "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "slot 0x19 is used by the harness's virtio-net-pci" in proc.stderr


def test_a_failed_build_shows_the_compilers_error_not_makes() -> None:
    stderr = ("  CC [M]  ih_attach.o\n"
              "ih_attach.c:12:5: error: implicit declaration of function 'iommu_foo'\n"
              "make[3]: *** [scripts/Makefile.build:294: ih_attach.o] Error 1\n"
              "make[2]: *** [Makefile:2222: .] Error 2\n")
    assert failure_lines(stderr) == ["ih_attach.c:12:5: error: implicit declaration of function "
                                     "'iommu_foo'"]
    assert failure_lines("a\nb\nc\nd\n") == ["b", "c", "d"]


def test_boot_command_words_are_an_argv_one_word_a_command_line() -> None:
    assert command_line(["cat /proc/cmdline; exit 3"]) == "cat /proc/cmdline; exit 3"
    assert command_line(["sh", "-c", "exit 7"]) == "sh -c 'exit 7'"
    assert command_line(["sh", "-c", "echo c > /proc/sysrq-trigger"]) == \
        "sh -c 'echo c > /proc/sysrq-trigger'"


def test_children_get_default_signals_whatever_was_inherited() -> None:
    # As under `nohup ... &` or cron: SIGINT ignored in the parent, and so in its children.
    code = ("import signal, subprocess, sys\n"
            "from harness.qemu import default_signals\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "probe = [sys.executable, '-c',\n"
            "         'import signal; print(signal.getsignal(2) == signal.SIG_IGN)']\n"
            "print(subprocess.run(probe, capture_output=True, text=True).stdout.strip())\n"
            "print(subprocess.run(probe, capture_output=True, text=True,\n"
            "                     preexec_fn=default_signals).stdout.strip())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "False"]  # ignored without the reset, not with it


def test_the_cli_takes_sigint_even_when_started_with_it_ignored() -> None:
    code = ("import signal\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "from harness.cli import main\n"
            "main(['profiles'])\n"
            "print('AFTER', signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "AFTER True" in out


def test_cli_profiles_and_their_diff() -> None:
    listing = cli("profiles")
    assert listing.returncode == 0
    assert [line.split()[0] for line in listing.stdout.splitlines()] == [
        "linux-6.1", "linux-6.12", "linux-7.2", "proposal-2022", "proposal-2022-alt"]
    diff = cli("profiles", "--diff", "linux-6.12", "linux-7.2")
    assert diff.returncode == 0
    rules = [line.split(":")[0] for line in diff.stdout.splitlines()[1:]]
    assert "has_replace" in rules and "smmu_groups_need_driver" in rules
    assert "has_device_claim" not in rules  # the same on both
    bad = cli("profiles", "--diff", "linux-6.12", "linux-9.9")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("iommu-harness: error: unknown profile 'linux-9.9' (choose one "
                                  "of: linux-6.1, linux-6.12, linux-7.2, proposal-2022, "
                                  "proposal-2022-alt)")
