"""DCDock flow: JWT auth, direction filters, conflicts to their user only, publish, stats."""

import time

import pytest
from helpers import FAST, assert_silent

from conftest import JWT_SECRET, KEYS
from switchboard_clients import AuthenticationFailed, HttpError
from switchboard_clients.dcdock import DcdockClient, publish, publish_assignment, publish_conflict, stats
from switchboard_clients.devtoken import make_token


def assignment(aid: int, direction=None) -> dict:
    data = {"id": aid, "version": 1}
    if direction:
        data["load"] = {"id": 9, "direction": direction}
    return data


async def test_dcdock_filters_and_conflicts(server):
    url, http, key = server.ws("dcdock", "/api/ws"), server.http("dcdock"), KEYS["dcdock"]
    tok3 = make_token(JWT_SECRET, user_id=3, email="operator1@dcdock.com")
    tok4 = make_token(JWT_SECRET, sub="4", email="operator2@dcdock.com")
    async with DcdockClient(url, token=tok3, backoff=FAST) as a, \
            DcdockClient(url, token=lambda: tok4, backoff=FAST) as b:
        await a.wait_connected(5)
        await b.wait_connected(5)
        assert a.client_id.startswith("user_3_")
        assert b.client_id.startswith("user_4_")

        reply = await a.subscribe("IB")
        assert reply["filters"] == {"direction": "IB"}
        assert a.direction == "IB"

        async def send(event_type, aid, direction):
            return await publish_assignment(
                http, event_type, assignment_id=aid, user_id=4, user_email="operator2@dcdock.com",
                data=assignment(aid, direction), api_key=key,
            )

        # IB reaches both; OB only the unfiltered board; no direction only the unfiltered board.
        assert await send("assignment_created", 7, "IB") == 2
        for cl in (a, b):
            got = await cl.recv_match("assignment_created", 5)
            assert got["assignment_id"] == 7 and got["action"] == "CREATE"
            assert len(got["timestamp"]) == 19  # seconds, no zone
        assert await send("assignment_updated", 8, "OB") == 1
        assert (await b.recv_match("assignment_updated", 5))["assignment_id"] == 8
        assert await send("assignment_deleted", 9, None) == 1
        assert (await b.recv_match("assignment_deleted", 5))["data"] == assignment(9)
        await assert_silent(a)

        # A conflict goes to its user's connections only, whatever the filter.
        n = await publish_conflict(
            http, assignment_id=7, user_id="3", current_version=5, attempted_version=4,
            current_data={"id": 7, "version": 5}, api_key=key,
        )
        assert n == 1
        got = await a.recv_match("conflict_detected", 5)
        assert got["current_version"] == 5 and got["attempted_version"] == 4
        await assert_silent(b)

        # unsubscribe clears the filter.
        assert (await a.unsubscribe())["type"] == "unsubscribed"
        assert await send("assignment_updated", 10, "OB") == 2
        await a.recv_match("assignment_updated", 5)
        await b.recv_match("assignment_updated", 5)

        # Heartbeat; bad direction.
        assert (await a.ping())["type"] == "pong"
        await a.send_json({"type": "subscribe", "filters": {"direction": "INBOUND"}})
        err = await a.recv_match("error", 5)
        assert err["message"] == "Invalid message format"

        st = await stats(http)
        ids = [c["client_id"] for c in st["clients"]]
        assert a.client_id in ids and b.client_id in ids

        # Publishing: key required, action must match type.
        with pytest.raises(HttpError) as e:
            await publish(http, {"type": "assignment_created"}, api_key="wrong")
        assert e.value.status == 401
        with pytest.raises(HttpError) as e:
            await publish(http, {"type": "assignment_created", "assignment_id": 1, "action": "DELETE",
                                 "user_id": 1, "user_email": "x", "data": {}}, api_key=key)
        assert e.value.status == 400


async def test_dcdock_bad_tokens_are_refused(server):
    url = server.ws("dcdock", "/api/ws")
    bad = [
        make_token("wrong-secret", user_id=1),
        make_token(JWT_SECRET, user_id=1, exp=int(time.time()) - 3600),
        "",
    ]
    for token in bad:
        client = DcdockClient(url, token=token, backoff=FAST)
        with pytest.raises(AuthenticationFailed):
            await client.wait_connected(5)
        assert client.last_close.code == 1008
        await client.close()
