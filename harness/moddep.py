"""modules.dep → the ordered closure of kernel modules a guest must load (pure).

modules.dep (written by depmod, see depmod(8)) has one line per module:
``kernel/path/mod.ko: kernel/path/dep1.ko kernel/path/dep2.ko``; dependencies are listed so that
loading them right to left satisfies each before its users.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class ModuleNotFound(LookupError):
    pass


def module_name(path: str) -> str:
    """``kernel/drivers/virtio/virtio_pci.ko.xz`` → ``virtio_pci`` (``-`` and ``_`` are one)."""
    base = path.rsplit("/", 1)[-1]
    base = base.split(".ko", 1)[0]
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, ...]]:
    deps: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        mod, _, rest = line.partition(":")
        deps[mod.strip()] = tuple(rest.split())
    return deps


def load_order(deps: Mapping[str, tuple[str, ...]], wanted: Iterable[str],
               builtin: Iterable[str] = ()) -> list[str]:
    """Paths to insmod, dependencies first, each once; built-in modules need nothing."""
    by_name = {module_name(p): p for p in deps}
    builtin_names = {module_name(b) for b in builtin}
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str) -> None:
        if path in seen:
            return
        seen.add(path)
        for dep in reversed(deps.get(path, ())):
            visit(dep)
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in builtin_names:
            continue
        if key not in by_name:
            raise ModuleNotFound(name)
        visit(by_name[key])
    return order
