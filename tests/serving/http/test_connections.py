"""``connections.Connections``: the open connections of the public port, the drain at shutdown
and the sweeper (idle, dribbling, stalled and stuck clients). Unit tests with stand-in
connections, then the same over real loopback sockets against a running mirror."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from urllib.parse import urlsplit

import pytest

from jwks_mirror.serving.http import connections as connections_module
from jwks_mirror.serving.http import public
from jwks_mirror.serving.http.connections import Connections, Liveness

from ...conftest import BOTH_LOOPS, config_text, jwks, until
from ...rawhttp import closed, read_response

REQUEST = b"GET /keys-myns/jwks.json HTTP/1.1\r\nHost: mirror\r\n\r\n"


class Client:
    """A stand-in connection: says what its sweep would do, records drain and abort."""

    def __init__(self, owner: Connections, *, sweep: str | None = None, busy: bool = False):
        self.owner = owner
        self.verdict = sweep
        self.busy = busy
        self.calls: list[str] = []
        owner.add(self)

    def sweep(self, limit: int) -> str | None:
        self.calls.append(f"sweep {limit}")
        if self.verdict is not None:
            self.abort()
        return self.verdict

    def drain(self) -> None:
        self.calls.append("drain")
        if not self.busy:
            self.owner.discard(self)  # closed at once: connection_lost

    def abort(self) -> None:
        self.calls.append("abort")
        self.owner.discard(self)


def test_liveness_an_answer_resets_the_idle_count():
    liveness = Liveness()
    assert [liveness.check(3, False, 0, 0) for _ in range(3)] == [None, None, "idle"]
    liveness = Liveness()
    served = [0, 1, 1, 2, 2, 2, 2]
    assert [liveness.check(3, False, 0, n) for n in served] == [
        None, None, None, None, None, None, "idle"
    ]


def test_liveness_a_buffer_that_does_not_shrink_is_stalled_unless_it_drained_between():
    liveness = Liveness()
    assert [liveness.check(2, False, 500, 1) for _ in range(3)] == [None, None, "stalled"]
    liveness = Liveness()
    verdicts = []
    for served in range(5):
        verdicts.append(liveness.check(2, False, 500, served))
        liveness.resumed = True  # resume_writing: the client read
    assert verdicts == [None] * 5
    liveness = Liveness()
    assert [liveness.check(9, False, size, 1) for size in (900, 800, 700, 600)] == [None] * 4


def test_liveness_a_closed_connection_still_there_a_sweep_later_is_aborted():
    liveness = Liveness()
    assert [liveness.check(3, True, 0, 0) for _ in range(2)] == [None, "closing"]


def _connections(aborted: list[str]) -> Connections:
    return Connections(keepalive_s=15.0, aborted=aborted.append)


def test_a_sweep_counts_each_abort_by_its_reason():
    aborted: list[str] = []
    owner = _connections(aborted)
    quiet = Client(owner)
    stalled = Client(owner, sweep="stalled")
    stuck = Client(owner, sweep="closing")
    owner.sweep_once(3)
    assert sorted(aborted) == ["closing", "stalled"]
    assert quiet.calls == ["sweep 3"] and len(owner) == 1
    assert stalled.calls == stuck.calls == ["sweep 3", "abort"]


async def test_close_drains_idle_clients_and_aborts_busy_ones_after_the_timeout():
    aborted: list[str] = []
    owner = _connections(aborted)
    idle = Client(owner)
    busy = Client(owner, busy=True)
    await owner.close(timeout_s=0.05)
    assert owner.draining
    assert idle.calls == ["drain"]
    assert busy.calls == ["drain", "abort"]
    assert aborted == ["shutdown"] and len(owner) == 0


async def test_close_returns_as_soon_as_the_last_connection_is_gone():
    aborted: list[str] = []
    owner = _connections(aborted)
    busy = Client(owner, busy=True)
    asyncio.get_running_loop().call_later(0.05, owner.discard, busy)  # its answer written
    await asyncio.wait_for(owner.close(timeout_s=30), 5)
    assert aborted == [] and busy.calls == ["drain"]


async def test_the_sweeper_runs_until_close(monkeypatch):
    monkeypatch.setattr(connections_module, "SWEEP_S", 0.01)
    aborted: list[str] = []
    owner = _connections(aborted)
    client = Client(owner)
    owner.start_sweeping("test")
    await until(lambda: len(client.calls) >= 2, what="two sweeps")
    assert client.calls[0] == f"sweep {int(15.0 / 0.01)}"
    await owner.close(timeout_s=0)
    swept = len(client.calls)
    await asyncio.sleep(0.05)
    assert len(client.calls) == swept  # no sweep after close


# -- over real sockets -----------------------------------------------------------------------


async def test_shutdown_closes_idle_connections_and_stops_accepting(served, connect):
    reader, writer = await connect(served)
    writer.write(REQUEST)
    assert (await read_response(reader))[0] == 200
    await asyncio.wait_for(served.stop(), 5)
    assert await closed(reader)
    with pytest.raises(OSError):
        await connect(served)


@pytest.mark.asyncio(loop_factories=BOTH_LOOPS)
async def test_shutdown_answers_the_connections_still_in_the_kernels_queue(served):
    """Clients whose handshake the kernel completed, request sent, that the loop has not
    accepted yet: closing a listening socket resets every one of them, so the port takes its
    queue first and answers them (200, then closed). The clients connect with blocking calls
    from the loop's own thread, so nothing accepts them before ``stop`` runs; ``stop`` closes
    the listener before its first suspension."""
    url = urlsplit(served.public_url)
    clients = []
    for _ in range(8):
        client = socket.create_connection((url.hostname, url.port), timeout=5)
        client.sendall(REQUEST)
        clients.append(client)
    await asyncio.wait_for(served.stop(), 10)
    for client in clients:
        with client:
            answer = b""
            while chunk := client.recv(65536):  # the answer, then the server's FIN
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
            assert b"\r\nConnection: close\r\n" in answer


async def test_idle_and_dribbling_connections_are_closed(fake_issuer, mirror_factory, connect, monkeypatch):
    monkeypatch.setattr(public, "KEEPALIVE_S", 0.6)
    monkeypatch.setattr(connections_module, "SWEEP_S", 0.2)
    issuer = await fake_issuer(document=jwks("k1"))
    running = await mirror_factory(config_text(f"  - name: keys-myns\n    jwks_uri: {issuer.url}\n"))
    await running.mirror.refresh()
    idle_reader, _ = await connect(running)
    slow_reader, slow_writer = await connect(running)
    busy_reader, busy_writer = await connect(running)
    idle_closed = asyncio.create_task(closed(idle_reader))
    slow_closed = asyncio.create_task(closed(slow_reader))
    # Dribble a head that never completes, and keep the busy connection busy, until the
    # server has closed both others; the sleep is the slow client's pace, not a wait.
    for i in range(len(REQUEST) - 1):
        if idle_closed.done() and slow_closed.done():
            break
        with contextlib.suppress(ConnectionError):
            slow_writer.write(REQUEST[i : i + 1])
        busy_writer.write(REQUEST)
        assert (await read_response(busy_reader))[0] == 200
        await asyncio.sleep(0.1)
    assert await idle_closed
    assert await slow_closed
    busy_writer.write(REQUEST)  # a connection in use is left alone
    assert (await read_response(busy_reader))[0] == 200
