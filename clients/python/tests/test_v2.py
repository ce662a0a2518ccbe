"""Protocol v2 against the real server: negotiation, unchanged v1 messages, resume after a
dropped connection (replay, ``recovered``, ``not_recovered``), acks and resends, and the v1
opt-out / fallback."""

import asyncio
import re

import pytest
from helpers import FAST, TcpProxy, assert_silent, eventually

from conftest import JWT_SECRET, KEYS, Server
from switchboard_clients import SUBPROTOCOL, Backoff, BufferFull
from switchboard_clients.afc import AfcClient, publish_event
from switchboard_clients.collab import CollabClient, broadcast
from switchboard_clients.dcdock import DcdockClient, publish_assignment
from switchboard_clients.devtoken import make_token
from switchboard_clients.laptimes import LaptimesClient, is_error
from switchboard_clients.race import RaceClient, publish_update

SESSION = re.compile(r"^[0-9a-f]{32}$")
EVENT_NAMES = ("session", "subscribed", "recovered", "not_recovered", "gap", "error")


@pytest.fixture(scope="module")
def trimmed():
    srv = Server(systems=("afc",), extra_args=["--history-max-entries", "2"]).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def no_history():
    srv = Server(systems=("laptimes", "afc"), extra_args=["--history-max-entries", "0"]).start()
    yield srv
    srv.stop()


def record(client) -> list:
    """Messages and events a client reports, in order: ``("msg", m)`` / ``(event, data)``."""
    log: list = []
    client.on_message = lambda m: log.append(("msg", m))
    for name in EVENT_NAMES:
        client.on(name, lambda e, name=name: log.append((name, e)))
    return log


def messages_of(log) -> list:
    return [m for kind, m in log if kind == "msg"]


def assert_v2(client) -> None:
    assert client.protocol == "v2"
    assert client.subprotocol == SUBPROTOCOL
    assert SESSION.match(client.session)


async def test_v2_negotiated_and_v1_messages_unchanged(server):
    lt = [LaptimesClient(server.ws("laptimes"), backoff=FAST) for _ in range(2)]
    afc = AfcClient(server.ws("afc", "/ws"), backoff=FAST)
    co_a = CollabClient(server.ws("collab", "/ws"), user_id="alice", backoff=FAST)
    co_b = CollabClient(server.ws("collab", "/ws"), user_id="bob", backoff=FAST)
    race = RaceClient(server.ws("race", "/ws"), sessions=["gp-1"], backoff=FAST)
    dock = DcdockClient(
        server.ws("dcdock", "/api/ws"), token=make_token(JWT_SECRET, user_id=3), backoff=FAST
    )
    clients = [*lt, afc, co_a, co_b, race, dock]
    subscribed_all = lt[1].expect_event("subscribed", lambda e: e["stream"] == "all")
    try:
        for c in clients:
            await c.start()
        for c in clients:
            await c.wait_connected(5)
            assert_v2(c)
        sub = await asyncio.wait_for(subscribed_all, 5)
        assert re.match(r"^[0-9a-f]{16}$", sub["epoch"])

        # Laptimes: the notice arrives as sent, never to its sender; the ack has its position.
        await assert_silent(lt[0], 0.1)  # session and subscribed frames are not messages
        notice = {"table": "times", "operation": "CHANGE", "timestamp": "2025-10-25T12:34:56.789Z", "by": "lab-3"}
        ack = await lt[0].send(notice)
        assert ack == {"stream": "all", "epoch": sub["epoch"], "offset": sub["offset"] + 1}
        assert await lt[1].recv(5) == notice
        assert lt[1].positions["all"] == {"epoch": ack["epoch"], "offset": ack["offset"]}
        await lt[1].send_text('{"operation":"CHANGE","table":"cars"}')
        assert list(await lt[0].recv(5)) == ["operation", "table"]
        await assert_silent(lt[1], 0.1)
        assert await lt[0].send_text("[1]") == {}  # refused by laptimes, still acked
        err = await lt[0].recv(5)
        assert is_error(err) and err["details"] == "expected a JSON object"

        # AFC: the event frame, exactly; the heartbeat ping is not acked nor kept.
        await publish_event(server.http("afc"), "todo-created", {"id": 1, "title": "New Todo"}, api_key=KEYS["afc"])
        assert await afc.recv(5) == {"type": "todo:created", "payload": {"id": 1, "title": "New Todo"}}
        assert (await afc.ping())["type"] == "pong"
        assert afc.unacked == 0

        # Collab: greeting consumed as in v1, presence and edits in their v1 shapes.
        assert co_a.client_id.startswith("client_")
        await co_a.join_project("p-shape")
        await co_b.join_project("p-shape")
        co_a.drain()
        edit_ack = await co_a.send_task_update("p-shape", {"id": "t-1", "title": "T"}, "op-1")
        assert edit_ack["stream"] == "project:p-shape"
        edit = await co_b.recv_match("TASK_UPDATE", 5)
        assert sorted(edit) == ["operationId", "payload", "projectId", "timestamp", "type", "userId"]
        assert edit["payload"] == {"id": "t-1", "title": "T"} and edit["userId"] == "alice"
        await broadcast(server.http("collab"), "TASKS_REORDERED", "p-shape", api_key=KEYS["collab"])
        for c in (co_a, co_b):
            assert (await c.recv_match("TASKS_REORDERED", 5))["projectId"] == "p-shape"
        assert co_b.positions["project:p-shape"]["offset"] == 2

        # Race (room from the URL) and DCDock (greeting, filter reply).
        assert (await race.recv_match("subscribed", 5))["data"] == {"sessionId": "gp-1"}
        await publish_update(server.http("race"), "gp-1", "lap_update", {"lapNumber": 3}, api_key=KEYS["race"])
        lap = await race.recv_match("lap_update", 5)
        assert list(lap) == ["type", "data", "timestamp"]
        assert "session:gp-1" in race.positions
        assert (await dock.subscribe("IB"))["type"] == "subscribed"
        await publish_assignment(
            server.http("dcdock"), "assignment_created", assignment_id=9, user_id=3,
            user_email="a@b", data={"id": 9, "load": {"direction": "IB"}}, api_key=KEYS["dcdock"],
        )
        assert (await dock.recv_match("assignment_created", 5))["assignment_id"] == 9
        assert "assignments" in dock.positions
    finally:
        for c in clients:
            await c.close()


async def test_afc_resume_replays_exactly_the_missed_events(server):
    http, key = server.http("afc"), KEYS["afc"]
    async with TcpProxy(server.ports["afc"]) as proxy:
        a = AfcClient(proxy.ws("/ws"), backoff=FAST)
        log = record(a)
        try:
            await a.start()
            await a.wait_connected(5)
            assert_v2(a)
            session = a.session
            await publish_event(http, "job-started", {"n": 0}, api_key=key)
            await a.wait_event("job:started")

            proxy.hold()  # the reconnection waits until the events are published
            proxy.cut()
            await eventually(lambda: not a.connected)
            n = 5
            for i in range(1, n + 1):
                await publish_event(http, "job-progressed", {"n": i}, api_key=key)
            recovered = a.expect_event("recovered")
            proxy.release()
            rec = await asyncio.wait_for(recovered, 5)
            assert rec["stream"] == "events" and rec["replayed"] == n
            assert a.connections == 2 and a.session == session and a.session_resumed is True
            await publish_event(http, "job-finished", {"n": 6}, api_key=key)
            await a.wait_event("job:finished")
            await assert_silent(a, 0.2)

            assert messages_of(log) == [
                {"type": "job:started", "payload": {"n": 0}},
                *({"type": "job:progressed", "payload": {"n": i}} for i in range(1, 6)),
                {"type": "job:finished", "payload": {"n": 6}},
            ]
            # The replayed events came before `recovered`, the live one after.
            kinds = [m["payload"]["n"] if k == "msg" else k for k, m in log if k != "subscribed"]
            assert kinds == ["session", 0, "session", 1, 2, 3, 4, 5, "recovered", 6]
            assert [e["resumed"] for k, e in log if k == "session"] == [False, True]
        finally:
            await a.close()


async def test_laptimes_resume_replays_other_clients_notices(server):
    b = LaptimesClient(server.ws("laptimes"), backoff=FAST)
    async with TcpProxy(server.ports["laptimes"]) as proxy:
        a = LaptimesClient(proxy.ws("/"), backoff=FAST)
        log = record(a)
        try:
            await a.start()
            await b.start()
            await a.wait_connected(5)
            await b.wait_connected(5)
            await a.notify("cars")  # a's own notice: not for a, live or replayed
            await b.recv(5)
            proxy.hold()
            proxy.cut()
            await eventually(lambda: not a.connected)
            sent = [await b.notify(t) for t in ("times", "drivers", "tracks")]
            recovered = a.expect_event("recovered")
            proxy.release()
            assert (await asyncio.wait_for(recovered, 5))["replayed"] == 3
            live = await b.notify("times")
            got = await a.recv_match(lambda m: m.get("timestamp") == live["timestamp"] and m["table"] == "times", 5)
            assert got == live
            assert messages_of(log) == [*sent, live]
        finally:
            await a.close()
            await b.close()


async def test_collab_rejoin_replays_missed_edits_via_join_since(server):
    project = "p-resume"
    b = CollabClient(server.ws("collab", "/ws"), user_id="bob", backoff=FAST)
    async with TcpProxy(server.ports["collab"]) as proxy:
        a = CollabClient(proxy.ws("/ws"), user_id="alice", backoff=FAST)
        log = record(a)
        try:
            for c in (a, b):
                await c.start()
                await c.wait_connected(5)
            await a.join_project(project)
            await b.join_project(project)
            await b.send_task_create(project, {"id": "t0"})
            await a.recv_match("TASK_CREATE", 5)
            proxy.hold()
            proxy.cut()
            await eventually(lambda: not a.connected)
            for tid in ("t1", "t2", "t3"):
                await b.send_task_update(project, {"id": tid})
            recovered = a.expect_event("recovered")
            proxy.release()
            rec = await asyncio.wait_for(recovered, 5)
            assert rec["stream"] == f"project:{project}" and rec["replayed"] == 3
            edits = [m for m in messages_of(log) if m["type"].startswith("TASK_")]
            assert [(m["type"], m["payload"]["id"], m["userId"]) for m in edits] == [
                ("TASK_CREATE", "t0", "bob"),
                ("TASK_UPDATE", "t1", "bob"),
                ("TASK_UPDATE", "t2", "bob"),
                ("TASK_UPDATE", "t3", "bob"),
            ]
        finally:
            await a.close()
            await b.close()


async def test_not_recovered_when_history_was_trimmed(trimmed):
    http, key = trimmed.http("afc"), KEYS["afc"]
    async with TcpProxy(trimmed.ports["afc"]) as proxy:
        a = AfcClient(proxy.ws("/ws"), backoff=FAST)
        log = record(a)
        try:
            await a.start()
            await a.wait_connected(5)
            await publish_event(http, "x-first", 1, api_key=key)
            await a.wait_event("x:first")
            proxy.hold()
            proxy.cut()
            await eventually(lambda: not a.connected)
            for i in range(1, 6):
                await publish_event(http, "x-missed", i, api_key=key)
            lost = a.expect_event("not_recovered")
            proxy.release()
            e = await asyncio.wait_for(lost, 5)
            assert e["stream"] == "events" and e["reason"] == "trimmed"
            assert a.positions["events"]["offset"] == 6  # carries on from the top
            await publish_event(http, "x-after", 7, api_key=key)
            await a.wait_event("x:after")
            assert [m["type"] for m in messages_of(log)] == ["x:first", "x:after"]
            assert not any(k == "recovered" for k, _ in log)
        finally:
            await a.close()


async def test_lost_ack_resend_is_deduplicated(server):
    b = LaptimesClient(server.ws("laptimes"), backoff=FAST)
    async with TcpProxy(server.ports["laptimes"]) as proxy:
        a = LaptimesClient(proxy.ws("/"), backoff=FAST, max_unacked=2)
        try:
            for c in (a, b):
                await c.start()
                await c.wait_connected(5)
            first = {"table": "cars", "operation": "CHANGE", "n": 1}
            ack1 = await a.send(first)
            assert ack1["stream"] == "all" and "duplicate" not in ack1
            assert await b.recv(5) == first
            assert b.positions["all"]["offset"] == ack1["offset"]

            # From now on the server's answers to `a` are lost: published, but no ack seen.
            proxy.swallow_replies()
            second = {"table": "times", "operation": "CHANGE", "n": 2}
            pending = await a.submit(second)
            assert await b.recv(5) == second
            published = b.positions["all"]
            assert a.unacked == 1 and not pending.done()
            third = await a.submit({"table": "drivers", "operation": "CHANGE", "n": 3})
            assert a.unacked == 2
            with pytest.raises(BufferFull):
                await a.send({"table": "x", "operation": "CHANGE"})

            # The connection dies; the client returns with its session and resends c-2, c-3.
            proxy.cut()
            ack2 = await asyncio.wait_for(pending, 10)
            assert a.session_resumed is True and a.connections == 2
            assert ack2 == {**published, "stream": "all", "duplicate": True}
            ack3 = await asyncio.wait_for(third, 5)
            assert ack3["offset"] == published["offset"] + 1
            assert (await b.recv(5))["n"] == 3  # the third published once ...
            await assert_silent(b, 0.3)  # ... and the second not again
            assert a.unacked == 0
        finally:
            await a.close()
            await b.close()


async def test_v1_on_request_and_fallback_without_history(server, no_history):
    v1 = LaptimesClient(server.ws("laptimes"), backoff=FAST, protocol="v1")
    v2 = LaptimesClient(server.ws("laptimes"), backoff=FAST)
    try:
        for c in (v1, v2):
            await c.start()
            await c.wait_connected(5)
        assert (v1.protocol, v1.subprotocol, v1.session) == ("v1", None, None)
        assert v2.protocol == "v2"
        n1 = {"table": "cars", "operation": "CHANGE"}
        assert await v1.send(n1) is None  # nothing is acked in v1
        assert await v2.recv(5) == n1
        n2 = await v2.notify("tracks")
        assert await v1.recv(5) == n2
        await v1.send_frame("[1]")  # v1 frames are the messages themselves
        assert (await v1.recv(5))["details"] == "expected a JSON object"
        assert v1.positions == {}
    finally:
        await v1.close()
        await v2.close()

    # --history-max-entries 0: no subprotocol echoed; the v2-default clients speak v1.
    sessions: list = []
    a = LaptimesClient(no_history.ws("laptimes"), backoff=FAST, on_session=sessions.append)
    b = LaptimesClient(no_history.ws("laptimes"), backoff=FAST)
    afc = AfcClient(no_history.ws("afc", "/ws"), backoff=FAST)
    try:
        for c in (a, b, afc):
            await c.start()
            await c.wait_connected(5)
            assert c.requested_protocol == "v2"
            assert (c.protocol, c.subprotocol, c.session) == ("v1", None, None)
        sent = await a.notify("drivers")
        assert await b.recv(5) == sent
        assert await b.send({"table": "cars", "operation": "CHANGE"}) is None
        assert (await a.recv(5))["table"] == "cars"
        await publish_event(no_history.http("afc"), "todo-created", {"id": 2}, api_key=KEYS["afc"])
        assert await afc.recv(5) == {"type": "todo:created", "payload": {"id": 2}}
        assert (await afc.ping())["type"] == "pong"
        assert sessions == []
        await a.drop_connection()
        await eventually(lambda: a.connections == 2 and a.connected)
        assert a.protocol == "v1"
    finally:
        for c in (a, b, afc):
            await c.close()


async def test_events_via_options_and_on(server):
    seen: list = []
    errors: list = []
    c = AfcClient(
        server.ws("afc", "/ws"),
        backoff=Backoff(0.05, 1, 0.05),
        on_session=lambda e: seen.append(("session", e["resumed"])),
        on_subscribed=lambda e: seen.append(("subscribed", e["stream"])),
    )
    c.on("error", lambda e: errors.append(e["error"]))
    try:
        await c.start()
        await c.wait_connected(5)
        await eventually(lambda: len(seen) == 2)
        assert seen == [("session", False), ("subscribed", "events")]
        await c.send_frame('{"sb":"nope"}')  # an envelope the server cannot read
        await eventually(lambda: len(errors) == 1)
        assert errors[0]
        with pytest.raises(ValueError):
            c.on("nope", print)
        with pytest.raises(ValueError):
            AfcClient(server.ws("afc", "/ws"), protocol="v3")
        with pytest.raises(ValueError):
            await c.send_text("not json")
    finally:
        await c.close()
