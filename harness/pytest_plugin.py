"""pytest plugin (registered by entry point ``iommu_harness``): guests as session fixtures.

Fixtures:
- ``guest_pool``: boots guests on demand, one per (platform, kernel, topology), kept for the
  session and always stopped at its end;
- ``guest``: the default guest (``--harness-platform``, ``--harness-kernel``, default topology).

Marker ``harness_guest(platform=..., kernel=..., topology=...)`` overrides the ``guest``
fixture's choice for one test; unknown keywords are a usage error, not a silent skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .guest import Guest
from .prepare import DEFAULT_TOPOLOGY, GuestRequest, prepare
from .qemu import live_processes

_MARKER_KEYS = {"platform", "kernel", "topology"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iommu-harness")
    group.addoption("--harness-platform", default="x86_64-vtd",
                    help="platform of the default guest (default: x86_64-vtd)")
    group.addoption("--harness-kernel", default="debian:6.1",
                    help="kernel of the default guest (default: debian:6.1)")
    group.addoption("--harness-accel", default="auto", help="auto, kvm or tcg")
    group.addoption("--harness-out", default=None,
                    help="folder for guest logs (default: $IOMMU_HARNESS_OUT or ./out)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "harness_guest(platform=, kernel=, topology=): the guest this test needs")


class GuestPool:
    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._guests: dict[tuple[str, str, str], Guest] = {}

    def request(self, platform: str | None = None, kernel: str | None = None,
                topology: Path | str | None = None) -> GuestRequest:
        opt = self._config.getoption
        out = opt("--harness-out")
        return GuestRequest(platform=platform or opt("--harness-platform"),
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
def guest(request: pytest.FixtureRequest, guest_pool: GuestPool) -> Guest:
    marker = request.node.get_closest_marker("harness_guest")
    kwargs: dict[str, str] = {}
    if marker is not None:
        unknown = set(marker.kwargs) - _MARKER_KEYS
        if marker.args or unknown:
            raise pytest.UsageError(
                f"{request.node.nodeid}: harness_guest takes only keywords "
                f"{sorted(_MARKER_KEYS)}, got args {marker.args} and {sorted(unknown)}")
        kwargs = dict(marker.kwargs)
    return guest_pool.get(**kwargs)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Belt and braces: no QEMU the harness started survives the session."""
    survivors = live_processes()
    for proc in survivors:
        proc.kill()
    if survivors:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
