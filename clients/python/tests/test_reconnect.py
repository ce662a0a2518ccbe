"""Reconnect: the server stops and comes back on the same ports; clients reconnect, restore
their state (projects, sessions, filters) and work again."""

import asyncio

from helpers import FAST, eventually

from conftest import JWT_SECRET, KEYS
from switchboard_clients.afc import AfcClient
from switchboard_clients.collab import CollabClient, presence_users
from switchboard_clients.dcdock import DcdockClient, publish_assignment
from switchboard_clients.devtoken import make_token
from switchboard_clients.laptimes import LaptimesClient
from switchboard_clients.race import RaceClient, publish_update


async def test_clients_reconnect_after_server_restart(fresh_server):
    srv = fresh_server
    await asyncio.to_thread(srv.start)
    downs = []
    lt_a = LaptimesClient(srv.ws("laptimes"), backoff=FAST, on_disconnect=downs.append)
    lt_b = LaptimesClient(srv.ws("laptimes"), backoff=FAST)
    co_a = CollabClient(srv.ws("collab", "/ws"), user_id="alice", backoff=FAST)
    co_b = CollabClient(srv.ws("collab", "/ws"), user_id="bob", backoff=FAST)
    race = RaceClient(srv.ws("race", "/ws"), backoff=FAST)
    dock = DcdockClient(
        srv.ws("dcdock", "/api/ws"), token=make_token(JWT_SECRET, user_id=3), backoff=FAST
    )
    clients = [lt_a, lt_b, co_a, co_b, race, dock]
    try:
        for c in clients:
            await c.start()
            await c.wait_connected(5)
        await co_a.join_project("p1")
        await co_b.join_project("p1")
        await race.subscribe("race-2024")
        await dock.subscribe("OB")
        first_ids = (co_a.client_id, dock.client_id)

        # Server goes away: every client notices (1012 on SIGTERM, or the connection drops).
        await asyncio.to_thread(srv.stop)
        await eventually(lambda: not any(c.connected for c in clients))
        assert downs and downs[0].code == 1012  # the server says it is restarting
        await asyncio.sleep(0.3)  # a few failed attempts while the port is closed
        assert all(c.connections == 1 for c in clients)

        # Back on the same ports: everyone reconnects by themselves.
        await asyncio.to_thread(srv.start)
        for c in clients:
            await c.wait_connected(10)
        assert all(c.connections == 2 for c in clients)
        assert (co_a.client_id, dock.client_id) != first_ids
        for c in clients:
            c.drain()

        # Laptimes relays again.
        sent = await lt_a.notify("drivers")
        assert await lt_b.recv_match(lambda m: m.get("table") == "drivers", 5) == sent

        # Collab re-joined p1 with its user: edits flow, presence lists both.
        await co_a.send_task_update("p1", {"id": "t1"}, "op-1")
        got = await co_b.recv_match("TASK_UPDATE", 5)
        assert got["userId"] == "alice" and got["projectId"] == "p1"
        presence = await co_a.join_project("p1")
        assert sorted(presence_users(presence)) == ["alice", "bob"]

        # Race re-followed its session (via ?sessionId= on the new connection).
        res = await publish_update(
            srv.http("race"), "race-2024", "lap_update", {"lapNumber": 2}, api_key=KEYS["race"]
        )
        assert res["delivered"] == 1
        assert (await race.recv_match("lap_update", 5))["data"] == {"lapNumber": 2}

        # DCDock re-sent its OB filter: an IB event does not arrive, an OB one does.
        for aid, direction in ((1, "IB"), (2, "OB")):
            await publish_assignment(
                srv.http("dcdock"), "assignment_created", assignment_id=aid, user_id=1,
                user_email="a@b", data={"id": aid, "load": {"direction": direction}},
                api_key=KEYS["dcdock"],
            )
        got = await dock.recv_match("assignment_created", 5)
        assert got["assignment_id"] == 2

        # An abrupt drop (no close frame) is also survived.
        await lt_b.drop_connection()
        await eventually(lambda: lt_b.connections == 3)
        sent = await lt_a.notify("cars")
        assert await lt_b.recv_match(lambda m: m.get("table") == "cars", 5) == sent
    finally:
        for c in clients:
            await c.close()


async def test_heartbeat_replaces_a_connection_to_a_frozen_server():
    """A server that stops answering (SIGSTOP) is detected by the heartbeat: the app-level
    ping for AFC, WebSocket pings for laptimes. Once it runs again, the clients are back."""
    from conftest import Server

    srv = Server(systems=("laptimes", "afc"))
    await asyncio.to_thread(srv.start)
    beat = dict(backoff=FAST, heartbeat_interval=0.2, heartbeat_timeout=0.5, open_timeout=1.0)
    lt = LaptimesClient(srv.ws("laptimes"), **beat)
    afc = AfcClient(srv.ws("afc", "/ws"), **beat)
    try:
        for c in (lt, afc):
            await c.start()
            await c.wait_connected(5)
        await asyncio.sleep(0.6)  # several heartbeats succeed: nothing changes
        assert lt.connections == 1 and afc.connections == 1 and lt.connected and afc.connected

        srv.freeze()
        await eventually(lambda: not lt.connected and not afc.connected, timeout=10)
        assert afc.last_close.code is None  # dropped by the client, no close frame
        srv.thaw()

        for c in (lt, afc):
            await eventually(lambda: c.connections >= 2 and c.connected, timeout=15)
        assert (await afc.ping(5))["type"] == "pong"
        assert afc.drain() == []  # heartbeat pongs are not queued
    finally:
        for c in (lt, afc):
            await c.close()
        srv.thaw()
        await asyncio.to_thread(srv.stop)
