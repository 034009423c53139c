"""pytest plugin (registered by entry point ``iommu_harness``): guests as session fixtures.

Fixtures:
- ``platform``: a test that takes it runs once per platform of ``--harness-platform`` (a comma
  list, or ``all``, the default); ``@pytest.mark.harness_platforms("x86_64-vtd", reason=...)``
  narrows that for a test about a feature other platforms lack, and must say why;
- ``guest_pool``: boots guests on demand, one per (platform, kernel, topology), kept for the
  session and always stopped at its end;
- ``guest``: the shared guest of the test's platform (``--harness-kernel``, default topology).

Marker ``harness_guest(kernel=..., topology=...)`` overrides the ``guest`` fixture's choice
for one test. A marker with bad arguments is a usage error, not a silent skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .guest import Guest
from .platforms import PLATFORMS
from .prepare import DEFAULT_TOPOLOGY, GuestRequest, prepare
from .qemu import live_processes

_MARKER_KEYS = {"kernel", "topology"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iommu-harness")
    group.addoption("--harness-platform", default="all",
                    help="platforms to run on: a comma list, or all (default)")
    group.addoption("--harness-kernel", default="debian:6.1",
                    help="kernel of the default guest (default: debian:6.1)")
    group.addoption("--harness-accel", default="auto", help="auto, kvm or tcg")
    group.addoption("--harness-out", default=None,
                    help="folder for guest logs (default: $IOMMU_HARNESS_OUT or ./out)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "harness_guest(kernel=, topology=): the guest this test needs")
    config.addinivalue_line(
        "markers", "harness_platforms(*names, reason=): only these platforms, and why")


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


class GuestPool:
    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._guests: dict[tuple[str, str, str], Guest] = {}

    def request(self, platform: str | None = None, kernel: str | None = None,
                topology: Path | str | None = None) -> GuestRequest:
        opt = self._config.getoption
        out = opt("--harness-out")
        return GuestRequest(platform=platform or selected_platforms(self._config)[0],
                            kernel=kernel or opt("--harness-kernel"),
                            topology=Path(topology) if topology else DEFAULT_TOPOLOGY,
                            accel=opt("--harness-accel"), out_root=Path(out) if out else None)

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
        return guest

    def fresh(self, platform: str | None = None, kernel: str | None = None,
              topology: Path | str | None = None) -> Guest:
        """A guest of the test's own (not started): use it as a context manager."""
        return Guest(prepare(self.request(platform, kernel, topology)))

    def close(self) -> None:
        for guest in self._guests.values():
            guest.close()
        self._guests.clear()


@pytest.fixture(scope="session")
def guest_pool(pytestconfig: pytest.Config) -> Iterator[GuestPool]:
    pool = GuestPool(pytestconfig)
    try:
        yield pool
    finally:
        pool.close()


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
