#!/usr/bin/env python3
"""A FAME-Z peer written only from the documented mailbox layout (no famez
code): it joins an ivshmem server, reads the globals, and runs the link-up
exchange with the switch. Each step is printed as one JSON line; the test
checks them. Usage: fame_z_peer.py SOCKET [NODENAME]."""
import array
import json
import mmap
import os
import select
import socket
import struct
import sys
import time

SLOT = 512
BUF = 128
DEADLINE = time.monotonic() + 20


def say(**kw):
    print(json.dumps(kw), flush=True)


def recv_msg(sock):
    fds = array.array('i')
    data, anc, flags, _ = sock.recvmsg(8, socket.CMSG_SPACE(fds.itemsize))
    if len(data) == 0:
        raise SystemExit('server closed the connection')
    assert len(data) == 8, len(data)
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    return struct.unpack('<q', data)[0], (fds[0] if fds else None)


def u64(mem, off):
    return struct.unpack_from('<Q', mem, off)[0]


def main():
    path = sys.argv[1]
    name = (sys.argv[2] if len(sys.argv) > 2 else 'pyZ').encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    assert recv_msg(sock) == (0, None), 'version'
    my_id, fd = recv_msg(sock)
    assert fd is None
    value, shm_fd = recv_msg(sock)
    assert value == -1 and shm_fd is not None
    size = os.fstat(shm_fd).st_size
    mem = mmap.mmap(shm_fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    slotsize, buf_offset, n_clients, n_events, server_id = (u64(mem, o) for o in (0, 8, 16, 24, 32))
    say(step='globals', id=my_id, slotsize=slotsize, buf_offset=buf_offset, nClients=n_clients, nEvents=n_events, server_id=server_id)
    fds = {}
    while len(fds.get(my_id, [])) < n_events:
        peer, fd = recv_msg(sock)
        assert fd is not None, 'a departure during the welcome'
        fds.setdefault(peer, []).append(fd)
    say(step='welcome', peers=sorted(p for p in fds if p != my_id), vectors=len(fds[my_id]))

    me = my_id * SLOT
    mem[me:me + 32] = name.ljust(32, b'\0')[:32]

    def wait_switch():
        """Waits for the switch's doorbell (our vector server_id), takes its message."""
        bell = fds[my_id][server_id]
        while True:
            left = DEADLINE - time.monotonic()
            if left <= 0:
                raise SystemExit('timed out waiting for the switch')
            r, _, _ = select.select([bell], [], [], left)
            if not r:
                continue
            os.eventfd_read(bell)
            sw = server_id * SLOT
            n = u64(mem, sw + 32)
            if n == 0:
                continue
            text = bytes(mem[sw + BUF: sw + BUF + n]).decode()
            struct.pack_into('<Q', mem, sw + 32, 0)
            say(step='received', text=text, last_responder=u64(mem, sw + 48))
            return text

    def send(text):
        while u64(mem, me + 32) != 0:
            if time.monotonic() > DEADLINE:
                raise SystemExit('our slot was never taken')
            time.sleep(0.001)
        data = text.encode()
        mem[me + BUF: me + BUF + len(data) + 1] = data + b'\0'
        struct.pack_into('<Q', mem, me + 48, server_id)
        struct.pack_into('<Q', mem, me + 32, len(data))
        os.eventfd_write(fds[server_id][my_id], 1)
        say(step='sent', text=text)

    first = wait_switch()
    assert first == 'Link CTL Peer-Attribute', first
    send('Link CTL ACK C-Class=Python,SID0=0,CID0=0')
    send('ping')
    assert wait_switch() == 'pong'
    send('Link CTL Peer-Attribute')
    wait_switch()
    send('Link RFC TTC=27us')
    write = wait_switch()
    assert write.startswith('CTL-Write '), write
    fields = dict(kv.split('=') for kv in write[len('CTL-Write '):].split(','))
    send('Standalone Acknowledgment Tag=%s,Reason=OK' % fields['Tag'])
    follow = wait_switch()
    assert follow == 'Link CTL Peer-Attribute', follow
    send('Link CTL ACK C-Class=Python,SID0=%s,CID0=%s' % (fields['SID'], fields['CID']))
    # Bad input: a buflen the layout forbids. The switch must reject it
    # and keep working.
    while u64(mem, me + 32) != 0:
        time.sleep(0.001)
    struct.pack_into('<Q', mem, me + 32, 999)
    os.eventfd_write(fds[server_id][my_id], 1)
    while u64(mem, me + 32) != 0 and time.monotonic() < DEADLINE:
        time.sleep(0.001)
    say(step='bad-buflen', freed=u64(mem, me + 32) == 0)
    send('ping')
    assert wait_switch() == 'pong'
    # Bytes that are not text: answered with a NAK.
    while u64(mem, me + 32) != 0:
        time.sleep(0.001)
    mem[me + BUF: me + BUF + 3] = b'\xff\xfe\0'
    struct.pack_into('<Q', mem, me + 32, 2)
    os.eventfd_write(fds[server_id][my_id], 1)
    nak = wait_switch()
    assert nak.startswith('Link CTL NAK'), nak
    # A message in the slot of an ID that is not connected, rung on its
    # vector (spoofing): ignored with a log line, no answer.
    other = my_id + 1 if my_id < n_clients else my_id - 1
    if other not in fds:
        base = other * SLOT
        mem[base + BUF: base + BUF + 5] = b'ping\0'
        struct.pack_into('<Q', mem, base + 32, 4)
        os.eventfd_write(fds[server_id][other], 1)
        say(step='spoofed', as_id=other)
    send('ping')
    assert wait_switch() == 'pong'
    say(step='done')


if __name__ == '__main__':
    main()
