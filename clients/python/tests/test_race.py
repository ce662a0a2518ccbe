"""Race flow: sessions via query and message, isolated updates, ping, errors."""

import pytest
from helpers import FAST, assert_silent

from conftest import KEYS
from switchboard_clients import HttpError
from switchboard_clients.race import RaceClient, RaceError, health, publish_update

LAP = {"driverId": "VER", "lapTime": "1:15.234", "isFastest": True, "lapNumber": 45}


async def test_race_updates_reach_followers_of_their_session_only(server):
    url, http, key = server.ws("race", "/ws"), server.http("race"), KEYS["race"]
    async with RaceClient(url, sessions=["race-2024"], backoff=FAST) as a, \
            RaceClient(url, backoff=FAST) as b:
        await a.wait_connected(5)
        # `?sessionId=` at connect is answered with `subscribed`.
        sub = await a.recv_match("subscribed", 5)
        assert sub["data"] == {"sessionId": "race-2024"}
        assert sub["timestamp"].endswith("Z")

        await b.wait_connected(5)
        reply = await b.subscribe("race-2025")
        assert reply["data"] == {"sessionId": "race-2025"}
        assert b.sessions == ["race-2025"]
        # Helpers return the reply without taking it off the queue.
        assert (await b.recv(5))["type"] == "subscribed"
        assert (await health(http))["sessions"] == 2

        res = await publish_update(http, "race-2024", "lap_update", LAP, api_key=key)
        assert res == {"sessionId": "race-2024", "delivered": 1}
        got = await a.recv_match("lap_update", 5)
        assert got["data"] == LAP and got["timestamp"].endswith("Z")
        await assert_silent(b)

        # The publisher's timestamp is relayed as given.
        ts = "2024-05-26T15:05:00.500+02:00"
        await publish_update(http, "race-2025", "drs_update", {"enabled": False}, api_key=key, timestamp=ts)
        got = await b.recv_match("drs_update", 5)
        assert got == {"type": "drs_update", "data": {"enabled": False}, "timestamp": ts}
        await assert_silent(a)

        # A client may follow several sessions; each update arrives once.
        await a.subscribe("race-2025")
        await a.subscribe("race-2025")
        res = await publish_update(http, "race-2025", "tire_change", {"driverId": "NOR"}, api_key=key)
        assert res["delivered"] == 2
        assert (await a.recv_match("tire_change", 5))["data"] == {"driverId": "NOR"}
        await assert_silent(a, 0.2)

        # Heartbeat.
        pong = await a.ping()
        assert pong["type"] == "pong" and pong["data"] == {}

        # Clients cannot publish; bad session ids are refused.
        await b.send_json({"type": "lap_update", "data": LAP})
        err = await b.recv_match("error", 5)
        assert "clients may not publish" in err["data"]["details"]
        await b.send_json({"type": "subscribe", "data": {"sessionId": "bad id!"}})
        err = await b.recv_match("error", 5)
        assert err["data"]["message"] == "Invalid message"

        # Unsubscribe stops delivery.
        reply = await b.unsubscribe("race-2025")
        assert reply["type"] == "unsubscribed"
        assert await b.recv(5) == reply
        res = await publish_update(http, "race-2025", "status_change", {"driverId": "SAI", "status": "PIT"}, api_key=key)
        assert res["delivered"] == 1
        await a.recv_match("status_change", 5)
        await assert_silent(b)

        # Publishing needs the key.
        with pytest.raises(HttpError) as e:
            await publish_update(http, "race-2024", "lap_update", LAP, api_key="wrong")
        assert e.value.status == 401


async def test_race_room_limit_error_is_raised(server):
    # The server's per-connection room limit answers with an error; subscribe() raises it.
    async with RaceClient(server.ws("race", "/ws"), backoff=FAST) as a:
        await a.wait_connected(5)
        for i in range(64):
            await a.subscribe(f"s-{i}")
        with pytest.raises(RaceError) as e:
            await a.subscribe("s-64")
        assert "at most 64 rooms" in str(e.value)
        assert "s-64" not in a.sessions
