"""The listening sockets of both ports, below the accept loops of
:mod:`jwks_mirror.serving.http.listening`: bound on every address the host resolves to, with
bounded kernel buffers that every accepted socket inherits, and, at shutdown, made to drop new
handshakes while the port takes the connections already in the kernel's queue."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import socket
import struct
import sys

SEND_BUFFER_BYTES = 32768  # a JWKS answer is a few KB; the kernel reserves twice this
# The admin port's answers are large (/metrics is MBs with thousands of issuers, /status and
# /peer too): through 64 KiB, loopback's delayed ACKs made a 7.5 MB scrape take 3.6 s instead
# of 0.44 s (bench/issuers10k.py). Its cap is small, so 64 connections reserve 32 MB at most.
ADMIN_SEND_BUFFER_BYTES = 262144
RECEIVE_BUFFER_BYTES = 32768  # a request head is ~200 bytes, at most 16 KiB

# A classic BPF program of one instruction, "return 0": every packet is dropped.
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)  # BPF_RET | BPF_K, k = 0
_SO_ATTACH_FILTER = 26  # Linux; the socket module does not export it


def refuse_new_handshakes(sock: socket.socket) -> None:
    """Shutdown, on Linux: the listening socket drops every packet from now on, so no new
    handshake completes into its queue while the queue is taken; a client's SYN goes
    unanswered and its retry finds the port closed (refused). Elsewhere, or if the kernel
    refuses the filter, nothing changes: the queue is still taken, in one synchronous pass."""
    if not sys.platform.startswith("linux"):
        return
    program = ctypes.create_string_buffer(_DROP_ALL, len(_DROP_ALL))
    fprog = struct.pack("HP", 1, ctypes.addressof(program))  # struct sock_fprog
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def bound_buffers(sock: socket.socket, *, send_bytes: int = SEND_BUFFER_BYTES) -> None:
    """Fix the socket's kernel buffers (it then no longer grows them by autotuning)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_bytes)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)


async def bind(
    host: str, port: int, *, backlog: int, send_bytes: int = SEND_BUFFER_BYTES
) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to (as ``create_server`` binds),
    with bounded buffers. Raises OSError when an address cannot be bound."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    seen: set[tuple[int, object]] = set()
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Before listen: the window offered in the SYN-ACK, and every accepted socket
            # inherits both sizes (no system call per connection).
            bound_buffers(sock, send_bytes=send_bytes)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
