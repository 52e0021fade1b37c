#!/usr/bin/env python3
"""Runs a command on a pseudo-terminal, as a person at a terminal would.

Everything the command writes to the terminal is copied to this script's
stdout as it comes; everything written to this script's stdin is typed
into the terminal (so a test sends b'\\x03' for Ctrl-C). Exits with the
command's status (128 + N when a signal N ended it). The test that spawns
this bounds its time and kills it; the command dies with its terminal.
"""
import os
import pty
import select
import sys


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: pty-run.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(sys.argv[1], sys.argv[1:])
    stdin = sys.stdin.fileno()
    inputs = [fd, stdin]
    while True:
        ready, _, _ = select.select(inputs, [], [], 1.0)
        if fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the command closed the terminal
                data = b""
            if not data:
                break
            os.write(sys.stdout.fileno(), data)
        if stdin in ready:
            data = os.read(stdin, 4096)
            if data:
                os.write(fd, data)
            else:
                inputs.remove(stdin)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
