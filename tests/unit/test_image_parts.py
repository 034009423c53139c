"""Pure pieces of the guest image: cpio archives, modules.dep closure, vmlinux extraction."""

from __future__ import annotations

import lzma
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from harness import cpio
from harness.moddep import ModuleNotFound, load_order, module_name, parse_modules_dep
from harness.vmlinux import VmlinuxError, extract_vmlinux, has_pvh_note, payload
from tests.conftest import DATA


def test_cpio_archive_lists_with_the_cpio_tool(tmp_path: Path) -> None:
    entries = [cpio.directory("bin"), cpio.file("bin/x", b"abc", 0o755),
               cpio.symlink("bin/y", "x"), cpio.chardev("console", 5, 1),
               cpio.file("odd", b"12345")]
    archive = tmp_path / "a.cpio"
    archive.write_bytes(cpio.archive(entries))
    tool = shutil.which("cpio")
    assert tool, "cpio is installed by make deps"
    listing = subprocess.run([tool, "-itv", "-F", str(archive)], capture_output=True, text=True,
                             check=True).stdout
    names = [line.split(" -> ")[0].split()[-1] for line in listing.splitlines()]
    assert listing.splitlines()[3].startswith("crw-------")
    assert names == ["bin", "bin/x", "bin/y", "console", "odd"]
    assert "bin/y -> x" in listing
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run([tool, "-id", "--no-absolute-filenames", "-F", str(archive), "bin/x", "odd"],
                   cwd=out, check=True, capture_output=True)
    assert (out / "bin/x").read_bytes() == b"abc" and (out / "odd").read_bytes() == b"12345"


def test_archive_is_deterministic() -> None:
    entries = [cpio.file("a", b"1"), cpio.file("b", b"2")]
    assert cpio.archive(entries) == cpio.archive(entries)
    assert len(cpio.archive(entries)) % 4 == 0


DEPS = parse_modules_dep((DATA / "modules.dep-6.1.0-56-amd64.virtio").read_text())


def test_virtio_closure_from_real_modules_dep() -> None:
    order = [module_name(p) for p in load_order(DEPS, ["virtio_pci", "virtio_console",
                                                       "virtio_net"])]
    assert order[-1] == "virtio_net"
    for before, after in [("virtio_ring", "virtio"), ("virtio", "virtio_pci"),
                          ("virtio_pci_modern_dev", "virtio_pci"), ("failover", "net_failover"),
                          ("net_failover", "virtio_net"), ("virtio", "virtio_console")]:
        assert order.index(before) < order.index(after)
    assert len(order) == len(set(order))


def test_builtin_modules_are_skipped_and_unknown_ones_refused() -> None:
    assert load_order(DEPS, ["virtio_pci"], builtin=["kernel/drivers/virtio/virtio_pci.ko"]) == []
    with pytest.raises(ModuleNotFound):
        load_order(DEPS, ["no_such_module"])


def test_module_names_normalise_dashes_and_compression() -> None:
    assert module_name("kernel/drivers/gpu/drm/virtio/virtio-gpu.ko.xz") == "virtio_gpu"


def fake_bzimage(elf: bytes) -> bytes:
    """A minimal bzImage header around an xz payload (boot protocol 2.15)."""
    setup_sects = 1
    blob = lzma.compress(elf, format=lzma.FORMAT_XZ)
    head = bytearray((setup_sects + 1) * 512)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x206, 0x20F)
    struct.pack_into("<II", head, 0x248, 16, len(blob))
    return bytes(head) + b"\0" * 16 + blob + b"\x01\x02\x03\x04"


def minimal_elf_with_pvh_note() -> bytes:
    note_name = b"Xen\0"
    note = struct.pack("<III", 4, 4, 18) + note_name + struct.pack("<I", 0x1000000)
    ehdr = bytearray(64)
    ehdr[:4] = b"\x7fELF"
    ehdr[4] = 2
    struct.pack_into("<Q", ehdr, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", ehdr, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = bytearray(56)
    struct.pack_into("<I", phdr, 0, 4)  # PT_NOTE
    struct.pack_into("<Q", phdr, 8, 120)  # p_offset
    struct.pack_into("<Q", phdr, 32, len(note))  # p_filesz
    return bytes(ehdr) + bytes(phdr) + note


def test_vmlinux_extraction_and_pvh_note() -> None:
    elf = minimal_elf_with_pvh_note()
    assert extract_vmlinux(fake_bzimage(elf)) == elf
    assert has_pvh_note(elf)
    assert not has_pvh_note(elf.replace(b"Xen\0", b"Gnu\0"))


def test_not_a_bzimage() -> None:
    with pytest.raises(VmlinuxError, match="HdrS"):
        payload(b"\0" * 4096)
