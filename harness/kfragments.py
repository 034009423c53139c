"""Kernel configuration fragments for kernels built from a source tree (pure).

The fragments ship in ``images/kconfig/``: ``base`` (what every guest needs), one per
architecture, and the optional ones a user names with ``--kconfig NAME``. They are merged onto
``make tinyconfig`` with the tree's own ``scripts/kconfig/merge_config.sh``, in the order
:func:`fragment_files` gives (a later fragment wins, as there); ``make olddefconfig`` then
drops what the tree cannot have (an option it does not know, or one whose dependencies are
unmet), and :func:`dropped` names those against what the fragments asked for: one line for
the user (an older tree lacks IOMMUFD and the newer VFIO options, which is not an error); what
a platform cannot boot without is refused by :func:`harness.kconfig.missing_options`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

from .errors import ConfigError

FRAGMENTS_DIR = Path(__file__).resolve().parent.parent / "images" / "kconfig"
OptionalFragment = Literal["debug", "fault-injection", "iommufd-test", "vfio-test"]
OPTIONAL: tuple[str, ...] = get_args(OptionalFragment)
ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}


def parse_fragment(text: str) -> dict[str, str]:
    """``CONFIG_X=v`` lines, and ``# CONFIG_X is not set`` as ``n``; later lines win."""
    options: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("# CONFIG_") and line.endswith(" is not set"):
            options[line[2:-len(" is not set")]] = "n"
        elif line.startswith("CONFIG_") and "=" in line:
            name, _, value = line.partition("=")
            options[name] = value.strip('"')
    return options


def fragment_files(arch: str, extras: Sequence[str] = (),
                   folder: Path = FRAGMENTS_DIR) -> list[Path]:
    """The fragments of a build in merge order: base, the architecture's, then ``extras``
    in the order given (each once), each followed by its architecture's part where it has
    one (``NAME.ARCH.config``). An unknown name is a usage error naming the known ones."""
    if arch not in ARCHES:
        raise ConfigError(f"no kernel configuration for architecture {arch!r}",
                          f"use one of {sorted(set(ARCHES.values()))}")
    unknown = [e for e in extras if e not in OPTIONAL]
    if unknown:
        raise ConfigError(f"unknown --kconfig {', '.join(unknown)}",
                          f"choose from {', '.join(OPTIONAL)}")
    names = ["base", ARCHES[arch]]
    for extra in dict.fromkeys(extras):  # an optional fragment's part for one arch follows it
        names += [extra, *([f"{extra}.{ARCHES[arch]}"]
                           if (folder / f"{extra}.{ARCHES[arch]}.config").is_file() else [])]
    return [folder / f"{n}.config" for n in names]


def merged(fragments: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """What the fragments ask for together: a later fragment's value wins."""
    out: dict[str, str] = {}
    for fragment in fragments:
        out.update(fragment)
    return out


def dropped(requested: Mapping[str, str], final: Mapping[str, str]) -> list[str]:
    """The options the final ``.config`` does not have as requested, one ``NAME=asked
    (got)`` each. A module asked for and built in is fine (it is there); ``n`` asked for is
    met by an absent option."""
    out = []
    for name, asked in sorted(requested.items()):
        got = final.get(name, "n")
        if got == asked or (asked == "m" and got == "y"):
            continue
        out.append(f"{name}={asked} (got {got if name in final else 'unset'})")
    return out


def dropped_line(tree: str, problems: Sequence[str]) -> str:
    """The one-line error for options a tree dropped."""
    return (f"the kernel tree {tree} dropped {len(problems)} requested option"
            f"{'s' if len(problems) != 1 else ''}: {'; '.join(problems)}")
