#!/usr/bin/env python3
"""Lets TorchSharp's native wrapper load against an older libstdc++ (Debian 12's GCC 12: GLIBCXX_3.4.30).

libLibTorchSharp.so (TorchSharp 0.107) was linked with GCC 13, whose <iostream> plants an undefined reference to
std::ios_base_library_init() at version GLIBCXX_3.4.32: a marker that pulls the stream initialisation in at link time.
No relocation uses it, so nothing ever calls or binds it, but the dynamic loader still checks, before any symbol, that
libstdc++.so.6 defines every version the library's .gnu.version_r asks for, and refuses to load it. A shim library
cannot help there (the check is against the file named libstdc++.so.6, not against whatever defines the symbol), and
this machine has no newer libstdc++ to preload. This script marks each such requirement weak (VER_FLG_WEAK), which the
loader accepts when the version is absent (glibc dl-version.c), after checking that no relocation of the library
needs a symbol of that version; anything else is refused with the reason. The file is rewritten by temp file + rename.

Usage: weaken-glibcxx.py LIB [--libstdcxx PATH]   (exit 0 when LIB loads as it is or after the patch)
"""
import os
import struct
import subprocess
import sys

SHT_RELA, SHT_DYNSYM = 4, 11
SHT_VERDEF, SHT_VERNEED, SHT_VERSYM = 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF
VER_FLG_WEAK = 0x2


def sections(data):
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    out = []
    for i in range(shnum):
        name, kind, _flags, _addr, offset, size, link, info, _align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, shoff + i * shentsize)
        out.append(dict(type=kind, offset=offset, size=size, link=link, info=info, entsize=entsize))
    return out


def cstr(data, offset):
    return data[offset:data.index(b"\0", offset)].decode()


def defined_versions(path):
    """The version names a library defines (.gnu.version_d)."""
    data = open(path, "rb").read()
    secs = sections(data)
    names = set()
    for s in secs:
        if s["type"] != SHT_VERDEF:
            continue
        strtab = secs[s["link"]]["offset"]
        at = s["offset"]
        for _ in range(s["info"]):
            _ver, _flags, _ndx, cnt, _hash, aux, nxt = struct.unpack_from("<HHHHIII", data, at)
            if cnt:
                names.add(cstr(data, strtab + struct.unpack_from("<I", data, at + aux)[0]))
            at += nxt
    return names


def system_libstdcxx():
    try:
        for line in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines():
            if line.strip().startswith("libstdc++.so.6 ") and "x86-64" in line:
                return line.split("=>")[1].strip()
    except OSError:
        pass
    return "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"


def main():
    args = sys.argv[1:]
    if not args:
        raise SystemExit(__doc__)
    lib = args[0]
    libstdcxx = args[args.index("--libstdcxx") + 1] if "--libstdcxx" in args else system_libstdcxx()
    have = defined_versions(libstdcxx)
    data = bytearray(open(lib, "rb").read())
    secs = sections(data)
    need = next((s for s in secs if s["type"] == SHT_VERNEED), None)
    if need is None:
        print(f"{lib}: no version requirements; nothing to do")
        return
    strtab = secs[need["link"]]["offset"]
    missing = {}  # version index -> (name, offset of its Vernaux entry, flags)
    at = need["offset"]
    for _ in range(need["info"]):
        _ver, cnt, file_, aux, nxt = struct.unpack_from("<HHIII", data, at)
        entry = at + aux
        for _ in range(cnt):
            _hash, flags, other, name, anext = struct.unpack_from("<IHHII", data, entry)
            if cstr(data, strtab + file_) == "libstdc++.so.6" and cstr(data, strtab + name) not in have:
                missing[other] = (cstr(data, strtab + name), entry, flags)
            entry += anext
        at += nxt
    if not missing:
        print(f"{lib}: every libstdc++ version it needs is in {libstdcxx}; nothing to do")
        return
    # Which dynamic symbols carry those versions, and does any relocation use them?
    dynsym = next(s for s in secs if s["type"] == SHT_DYNSYM)
    versym = next(s for s in secs if s["type"] == SHT_VERSYM)
    dynstr = secs[dynsym["link"]]["offset"]
    count = dynsym["size"] // 24
    symbols = {}
    for i in range(count):
        ndx = struct.unpack_from("<H", data, versym["offset"] + 2 * i)[0] & 0x7FFF
        if ndx in missing:
            symbols[i] = (cstr(data, dynstr + struct.unpack_from("<I", data, dynsym["offset"] + 24 * i)[0]), ndx)
    for s in secs:
        if s["type"] == SHT_RELA and secs[s["link"]] is dynsym:
            for r in range(s["size"] // 24):
                sym = struct.unpack_from("<Q", data, s["offset"] + 24 * r + 8)[0] >> 32
                if sym in symbols:
                    raise SystemExit(f"{lib}: a relocation uses {symbols[sym][0]}, whose version is missing from "
                                     f"{libstdcxx}: it cannot be weakened safely; install a newer libstdc++ instead")
    changed = []
    for ndx, (name, entry, flags) in missing.items():
        if not flags & VER_FLG_WEAK:
            struct.pack_into("<H", data, entry + 4, flags | VER_FLG_WEAK)
            changed.append(name)
    names = ", ".join(f"{name} ({', '.join(s for s, n in symbols.values() if n == ndx) or 'no symbol'})"
                      for ndx, (name, _entry, _flags) in missing.items())
    if not changed:
        print(f"{lib}: already patched: weak requirement of {names}")
        return
    tmp = lib + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, os.stat(lib).st_mode)
    os.replace(tmp, lib)
    print(f"{lib}: marked weak (no relocation uses them; {libstdcxx} lacks them): {names}")


if __name__ == "__main__":
    main()
