"""A writer for the cpio "newc" format the kernel unpacks as initramfs (pure).

Format: Documentation/driver-api/early-userspace/buffer-format.rst — a 110-byte ASCII header
("070701" and thirteen 8-digit hex fields), the NUL-terminated name, padding to 4 bytes, the
data, padding to 4 bytes; the archive ends with an entry named "TRAILER!!!".
"""

from __future__ import annotations

import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    name: str  # path inside the archive, without a leading "/"
    mode: int  # including the file type bits
    data: bytes = b""  # file contents, or the target of a symlink
    rdev: tuple[int, int] = (0, 0)  # major, minor of a device node


def directory(name: str, perm: int = 0o755) -> Entry:
    return Entry(name, stat.S_IFDIR | perm)


def file(name: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(name, stat.S_IFREG | perm, data)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, stat.S_IFLNK | 0o777, target.encode())


def chardev(name: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(name, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def archive(entries: list[Entry]) -> bytes:
    """Serialise entries in order; parents must come before their children."""
    out = bytearray()
    for ino, entry in enumerate([*entries, Entry("TRAILER!!!", 0)], start=1):
        rmaj, rmin = entry.rdev
        encoded = entry.name.encode() + b"\0"
        fields = (ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, rmaj, rmin,
                  len(encoded), 0)
        header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        out += header + encoded + _pad(len(header) + len(encoded))
        out += entry.data + _pad(len(entry.data))
    return bytes(out)
