#!/usr/bin/env python3
"""Run inside a famez test VM: what the guest sees of its ivshmem devices.

Usage: guest_ivshmem.py [--mark SIZE TEXT]

Prints one JSON line per PCI device 1af4:1110 (ivshmem-doorbell or
ivshmem-plain), in bus order:
  {"bdf": "0000:00:03.0", "bar2": size of resource2, "msix": has resource1
   (the doorbell's MSI-X table), "ivposition": BAR0 @8 (doorbell only)}
With --mark, also writes TEXT at offset 0 of the BAR2 of size SIZE (mmap of
sysfs resource2, then msync), for the host to read from the backing file.
Shares no code with famez.
"""
import json
import mmap
import os
import struct
import sys

DEVICES = "/sys/bus/pci/devices"


def read(path):
    with open(path) as f:
        return f.read().strip()


def main():
    mark = None
    if sys.argv[1:2] == ["--mark"]:
        mark = (int(sys.argv[2]), sys.argv[3].encode())
    for bdf in sorted(os.listdir(DEVICES)):
        d = os.path.join(DEVICES, bdf)
        if read(d + "/vendor") != "0x1af4" or read(d + "/device") != "0x1110":
            continue
        bar2 = os.path.getsize(d + "/resource2")
        msix = os.path.exists(d + "/resource1")
        info = {"bdf": bdf, "bar2": bar2, "msix": msix}
        if msix:
            with open(d + "/resource0", "r+b") as f:
                regs = mmap.mmap(f.fileno(), 256)
                info["ivposition"] = struct.unpack_from("<I", regs, 8)[0]
                regs.close()
        if mark and bar2 == mark[0]:
            with open(d + "/resource2", "r+b") as f:
                m = mmap.mmap(f.fileno(), bar2)
                m[: len(mark[1])] = mark[1]
                m.flush()
                m.close()
            info["marked"] = True
        print(json.dumps(info), flush=True)


main()
