#!/usr/bin/env python3
"""A raw ivshmem protocol reader that shares no code with famez.

Usage: ivshmem_probe.py SOCKET

Connects to SOCKET and, for every recvmsg of 8 bytes (with room for up to
four fds, so a server sending more than one is caught), prints one JSON line:
  {"index": i, "nbytes": n, "value": v, "hasFd": bool, "nfds": k,
   "ctrunc": bool, "fdKind": "eventfd"|"memfd"|..., "size": st_size,
   "eventfdId": id, "cloexec": bool}
then {"event": "eof"} when the server closes the connection.

Commands on stdin, one per line:
  signal I   write 1 to the fd that came with message I
  drain I    read (nonblocking) the eventfd of message I -> {"event": "drained", ...}
  quit       close everything and exit
Closing stdin also exits.
"""
import array
import fcntl
import json
import os
import select
import socket
import struct
import sys


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def describe_fd(fd):
    info = {}
    target = os.readlink("/proc/self/fd/%d" % fd)
    info["target"] = target
    if target == "anon_inode:[eventfd]":
        info["fdKind"] = "eventfd"
        with open("/proc/self/fdinfo/%d" % fd) as f:
            for line in f:
                key, _, val = line.partition(":")
                if key.strip() == "eventfd-id":
                    info["eventfdId"] = int(val.strip())
    elif target.startswith("/memfd:"):
        info["fdKind"] = "memfd"
    elif target.startswith("/dev/shm/"):
        info["fdKind"] = "posix-shm"
    else:
        info["fdKind"] = "other"
    info["size"] = os.fstat(fd).st_size
    info["cloexec"] = bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
    return info


def main():
    path = sys.argv[1]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    emit({"event": "connected"})
    fds_by_index = {}
    index = 0
    open_sock = True
    stdin = sys.stdin.buffer
    pending = b""
    while True:
        watch = [stdin] + ([sock] if open_sock else [])
        ready, _, _ = select.select(watch, [], [])
        if open_sock and sock in ready:
            data, anc, flags, _ = sock.recvmsg(8, socket.CMSG_SPACE(4 * 4), socket.MSG_CMSG_CLOEXEC)
            if not data:
                emit({"event": "eof"})
                sock.close()
                open_sock = False
            else:
                fds = []
                for level, kind, cdata in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.extend(array.array("i", cdata[: len(cdata) - len(cdata) % 4]))
                rec = {
                    "index": index,
                    "nbytes": len(data),
                    "hasFd": bool(fds),
                    "nfds": len(fds),
                    "ctrunc": bool(flags & socket.MSG_CTRUNC),
                }
                if len(data) == 8:
                    rec["value"] = struct.unpack("<q", data)[0]
                else:
                    rec["raw"] = data.hex()
                if fds:
                    rec.update(describe_fd(fds[0]))
                    fds_by_index[index] = fds[0]
                    for extra in fds[1:]:
                        os.close(extra)
                emit(rec)
                index += 1
        if stdin in ready:
            chunk = os.read(stdin.fileno(), 4096)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                parts = line.decode().split()
                if not parts:
                    continue
                if parts[0] == "quit":
                    return
                i = int(parts[1])
                fd = fds_by_index[i]
                if parts[0] == "signal":
                    os.write(fd, struct.pack("=Q", 1))
                    emit({"event": "signalled", "index": i})
                elif parts[0] == "drain":
                    try:
                        count = struct.unpack("=Q", os.read(fd, 8))[0]
                    except BlockingIOError:
                        count = 0
                    emit({"event": "drained", "index": i, "count": count})


if __name__ == "__main__":
    main()
