"""Extract the uncompressed ELF ``vmlinux`` from an x86 bzImage (pure, bytes in, bytes out).

Under TCG most of an x86 boot is the guest decompressing itself; QEMU can boot the ELF
directly through its PVH entry when the kernel has CONFIG_PVH=y. The bzImage layout is the
x86 boot protocol (Documentation/arch/x86/boot.rst): ``setup_sects`` at 0x1f1, the "HdrS"
magic at 0x202, the protocol version at 0x206, and from protocol 2.08 ``payload_offset`` and
``payload_length`` at 0x248 and 0x24c, the payload starting after the real-mode setup code.
"""

from __future__ import annotations

import lzma
import shutil
import struct
import subprocess
import zlib

ELF_MAGIC = b"\x7fELF"


class VmlinuxError(ValueError):
    pass


def payload(bzimage: bytes) -> bytes:
    """The compressed kernel inside a bzImage."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        raise VmlinuxError("not an x86 bzImage (no HdrS magic at 0x202)")
    version = struct.unpack_from("<H", bzimage, 0x206)[0]
    if version < 0x208:
        raise VmlinuxError(f"boot protocol {version:#x} predates payload fields (2.08)")
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return bzimage[start:start + length]


def decompress(data: bytes) -> bytes:
    """Decompress a kernel payload by its magic: xz, gzip or zstd (zstd needs the module)."""
    if data.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    if data.startswith(b"\x1f\x8b"):
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(data)
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        return _zstd(data)
    raise VmlinuxError(f"unknown kernel compression (magic {data[:6].hex()})")


def _zstd(data: bytes) -> bytes:
    """The standard library has no zstd before Python 3.14: use the zstd program."""
    tool = shutil.which("zstd")
    if tool is None:
        raise VmlinuxError("zstd-compressed kernel and no zstd program (apt-get install zstd)")
    # The kernel appends its uncompressed size after the frame; zstd -d stops at the frame end
    # but then complains about the trailing bytes, so the output is taken whatever it says.
    proc = subprocess.run([tool, "-dcq"], input=data, capture_output=True, check=False)
    if not proc.stdout:
        raise VmlinuxError(f"zstd failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def extract_vmlinux(bzimage: bytes) -> bytes:
    elf = decompress(payload(bzimage))
    if not elf.startswith(ELF_MAGIC):
        raise VmlinuxError("decompressed payload is not an ELF image")
    return elf


def has_pvh_note(elf: bytes) -> bool:
    """True if the ELF carries XEN_ELFNOTE_PHYS32_ENTRY (18), the PVH entry point QEMU needs
    (arch/x86/platform/pvh/head.S; QEMU hw/i386/x86.c: x86_load_linux reads it)."""
    if elf[4] != 2:  # ELFCLASS64 only
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        base = phoff + i * phentsize
        p_type, = struct.unpack_from("<I", elf, base)
        if p_type != 4:  # PT_NOTE
            continue
        off, = struct.unpack_from("<Q", elf, base + 8)
        size, = struct.unpack_from("<Q", elf, base + 32)
        pos, end = off, off + size
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False
