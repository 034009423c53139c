"""pytest plugin (registered by entry point ``iommu_harness``): guests as session fixtures.

Fixtures:
- ``platform``: a test that takes it runs once per platform of ``--harness-platform`` (a comma
  list, or ``all``, the default); ``@pytest.mark.harness_platforms("x86_64-vtd", reason=...)``
  narrows that for a test about a feature other platforms lack, and must say why;
- ``guest_pool``: starts guests on demand: ``get()`` one shared guest per (platform, kernel,
  topology), kept for the session and always stopped at its end; ``fresh()`` a pristine guest
  of the test's own, restored from the saved state of its kind (see :mod:`harness.snapshot`),
  or booted with ``boot=True`` or ``--harness-no-snapshot``;
- ``guest``: the shared guest of the test's platform (``--harness-kernel``, default topology).

Marker ``harness_guest(kernel=..., topology=...)`` overrides the ``guest`` fixture's choice
for one test. A marker with bad arguments is a usage error, not a silent skip.

Every test that uses a guest gets a kernel-log verdict: the records each guest logged while the
test ran (sliced from /dev/kmsg by sequence number; from the console log when the guest died)
are classified, and a splat the test did not declare with ``harness_expect(...)`` fails it, as
does a declared event that did not appear. Each test's slices are kept under the run's output
folder, ``<out>/pytest-<stamp>-<pid>/tests/<test>/``, beside every guest's full logs.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from .dmesg import Event, classify, events_of, format_records
from .errors import GuestError
from .guest import Guest, GuestConfig, KmsgMark
from .platforms import PLATFORMS
from .prepare import DEFAULT_TOPOLOGY, GuestRequest, out_root, prepare
from .qemu import live_processes
from .verdict import judge

_MARKER_KEYS = {"kernel", "topology"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iommu-harness")
    group.addoption("--harness-platform", default="all",
                    help="platforms to run on: a comma list, or all (default)")
    group.addoption("--harness-kernel", default="debian:6.1",
                    help="kernel of the default guest: a debian: spec, an image or a kernel "
                         "source tree (default: debian:6.1)")
    group.addoption("--harness-kconfig", action="append", default=[],
                    help="an optional configuration fragment for a source-tree kernel "
                         "(repeatable)")
    group.addoption("--harness-accel", default="auto", help="auto, kvm or tcg")
    group.addoption("--harness-out", default=None,
                    help="folder for guest logs (default: $IOMMU_HARNESS_OUT or ./out)")
    group.addoption("--harness-no-snapshot", action="store_true", default=False,
                    help="boot every guest instead of restoring saved ones "
                         "(also $IOMMU_HARNESS_NO_SNAPSHOT=1)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "harness_guest(kernel=, topology=): the guest this test needs")
    config.addinivalue_line(
        "markers", "harness_platforms(*names, reason=): only these platforms, and why")
    config.addinivalue_line(
        "markers", "harness_expect(*events): kernel events (kinds or signatures) this test "
                   "causes on purpose; they must appear, and do not fail it")
    selected_platforms(config)  # a bad --harness-platform is a usage error before collection


def selected_platforms(config: pytest.Config) -> list[str]:
    value = str(config.getoption("--harness-platform"))
    names = sorted(PLATFORMS, reverse=True) if value == "all" else value.split(",")
    unknown = [n for n in names if n not in PLATFORMS]
    if unknown:
        raise pytest.UsageError(f"--harness-platform: unknown {unknown}; "
                                f"known: {sorted(PLATFORMS)} or all")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "platform" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else ""
        if "platform" in ([n.strip() for n in names.split(",")] if isinstance(names, str)
                          else list(names)):
            return  # the test chose its platforms itself
    names = selected_platforms(metafunc.config)
    marker = metafunc.definition.get_closest_marker("harness_platforms")
    if marker is not None:
        reason = marker.kwargs.get("reason")
        unknown = [a for a in marker.args if a not in PLATFORMS]
        if not marker.args or not reason or unknown or set(marker.kwargs) - {"reason"}:
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: harness_platforms takes platform names "
                f"{sorted(PLATFORMS)} and reason='why the others lack the feature'")
        names = [n for n in names if n in marker.args]
    metafunc.parametrize("platform", names, ids=names)


_START = KmsgMark(0, 0)


class GuestPool:
    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._guests: dict[tuple[str, str, str], Guest] = {}
        self._configs: dict[tuple[str, str, str, bool, tuple[str, ...]], GuestConfig] = {}
        self._fresh_count = 0
        self._accepted: set[str] = set()
        out = config.getoption("--harness-out")
        self.run_dir = out_root(Path(out) if out else None) / \
            f"pytest-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        # id(guest) → (guest, where its kernel log stood when the test body started)
        self._used: dict[int, tuple[Guest, KmsgMark]] = {}

    def request(self, platform: str | None = None, kernel: str | None = None,
                topology: Path | str | None = None, boot: bool = False) -> GuestRequest:
        opt = self._config.getoption
        return GuestRequest(platform=platform or selected_platforms(self._config)[0],
                            kernel=kernel or opt("--harness-kernel"),
                            topology=Path(topology) if topology else DEFAULT_TOPOLOGY,
                            accel=opt("--harness-accel"), out_root=self.run_dir,
                            snapshot=not boot and not opt("--harness-no-snapshot"),
                            kconfig=tuple(opt("--harness-kconfig")))

    def get(self, platform: str | None = None, kernel: str | None = None,
            topology: Path | str | None = None) -> Guest:
        """A running guest for this combination, booted on first use and reused after."""
        req = self.request(platform, kernel, topology)
        key = (req.platform, req.kernel, str(req.topology))
        guest = self._guests.get(key)
        if guest is not None and (guest.qemu is None or guest.qemu.exited):
            guest.close()
            guest = None
        if guest is None:
            guest = Guest(prepare(req)).__enter__()
            self._guests[key] = guest
        self._use(guest)
        return guest

    def fresh(self, platform: str | None = None, kernel: str | None = None,
              topology: Path | str | None = None, *, boot: bool = False,
              ready: tuple[str, ...] = ()) -> Guest:
        """A pristine guest of its own (not started: use it as a context manager), restored
        from the saved state of its kind (booted and saved the first time). ``boot=True``
        boots it, for a test about the boot itself; ``ready``: commands that make it ready
        besides the usual ones (a guest saved set up for many runs of one set-up)."""
        req = self.request(platform, kernel, topology, boot)
        key = (req.platform, req.kernel, str(req.topology), req.snapshot, ready)
        config = self._configs.get(key)
        if config is None:
            config = prepare(req)
            config = self._configs[key] = replace(config, ready=(*config.ready, *ready))
        self._fresh_count += 1
        guest = Guest(replace(config, out_dir=config.out_dir / f"fresh-{self._fresh_count:04d}"))
        self._use(guest)
        return guest

    # ------------------------------------------------------------------ verdicts
    def _use(self, guest: Guest) -> None:
        """A guest booted during the test body is judged from its first record."""
        self._used.setdefault(id(guest), (guest, _START))

    def accept(self, signatures: Iterable[str]) -> None:
        """Events a finer verdict already expected while the test ran (a WARN the model
        predicted for one step, judged by the Differ): not splats for the test's verdict."""
        self._accepted.update(signatures)

    def begin_test(self) -> None:
        """Note where each running guest's kernel log stands. Tests run one at a time, so
        whatever any guest logs from here on is this test's doing."""
        self._used.clear()
        self._accepted.clear()
        for guest in self._guests.values():
            if guest.alive:
                try:
                    self._used[id(guest)] = (guest, guest.kmsg_mark())
                except GuestError:
                    continue

    def events_of_test(self, guest: Guest, mark: KmsgMark) -> tuple[list[Event], str]:
        """The events a guest's kernel logged since ``mark``, and the raw slice."""
        if guest.alive:
            try:
                records = guest.kmsg_since(mark.seq)
                text = format_records(records)
                return classify(records), text
            except GuestError:
                pass
        log = guest.console_log.read_text(errors="replace") if guest.console_log.exists() \
            else ""
        return [e for e in events_of(log) if e.usec is None or e.usec > mark.usec], log

    def end_test(self, nodeid: str, expect: tuple[str, ...]) -> str:
        """Judge the kernel events of every guest the test used; return the failure message
        (empty if all is well). The slices are written to the test's output folder."""
        folder = self.run_dir / "tests" / re.sub(r"[^\w.\[\]-]+", "_", nodeid)[-150:]
        problems, events = [], []
        for guest, mark in self._used.values():
            guest_events, text = self.events_of_test(guest, mark)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{guest.out_dir.name}.kmsg").write_text(text)
            guest_events = [e for e in guest_events if e.signature not in self._accepted]
            events += guest_events
            verdict = judge(guest_events, ())
            if verdict.unexpected:
                problems.append((guest, verdict))
        overall = judge(events, expect)
        self._used.clear()
        if overall.ok:
            return ""
        return overall.explain() + "".join(
            f"\n(kernel log slice: {folder / (g.out_dir.name + '.kmsg')})" for g, _ in problems)

    def close(self) -> None:
        for guest in self._guests.values():
            guest.close()
        self._guests.clear()


_POOLS: list[GuestPool] = []


@pytest.fixture(scope="session")
def guest_pool(pytestconfig: pytest.Config) -> Iterator[GuestPool]:
    pool = GuestPool(pytestconfig)
    _POOLS.append(pool)
    try:
        yield pool
    finally:
        pool.close()
        _POOLS.remove(pool)


def _expectations(item: pytest.Item) -> tuple[str, ...]:
    marker = item.get_closest_marker("harness_expect")
    if marker is None:
        return ()
    if marker.kwargs or not marker.args or not all(isinstance(a, str) for a in marker.args):
        raise pytest.UsageError(f"{item.nodeid}: harness_expect takes event kinds or "
                                "signatures as strings, e.g. harness_expect('dmar_fault')")
    return tuple(marker.args)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """The automatic kernel-log verdict around every test body."""
    expect = _expectations(item)
    pools = list(_POOLS)
    for pool in pools:
        pool.begin_test()
    try:
        result = yield
    except BaseException:
        for pool in pools:
            pool.end_test(item.nodeid, expect)  # keep the slices; the test already failed
        raise
    message = "\n".join(m for pool in pools if (m := pool.end_test(item.nodeid, expect)))
    if message:
        pytest.fail(message, pytrace=False)
    return result


@pytest.fixture
def guest(request: pytest.FixtureRequest, guest_pool: GuestPool, platform: str) -> Guest:
    marker = request.node.get_closest_marker("harness_guest")
    kwargs: dict[str, str] = {}
    if marker is not None:
        unknown = set(marker.kwargs) - _MARKER_KEYS
        if marker.args or unknown:
            raise pytest.UsageError(
                f"{request.node.nodeid}: harness_guest takes only keywords "
                f"{sorted(_MARKER_KEYS)}, got args {marker.args} and {sorted(unknown)}")
        kwargs = dict(marker.kwargs)
    return guest_pool.get(platform=platform, **kwargs)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Belt and braces: no QEMU the harness started survives the session."""
    survivors = live_processes()
    for proc in survivors:
        proc.kill()
    if survivors:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
