"""AFC flow: HTTP-published events reach every listener; ping/pong; errors."""

import pytest
from helpers import FAST, assert_silent

from conftest import KEYS
from switchboard_clients import HttpError
from switchboard_clients.afc import AfcClient, event_path, health, publish_event, publish_event_raw


async def test_afc_events_reach_every_listener(server):
    url, http, key = server.ws("afc", "/ws"), server.http("afc"), KEYS["afc"]
    async with AfcClient(url, backoff=FAST) as a, AfcClient(url, backoff=FAST) as b:
        await a.wait_connected(5)
        await b.wait_connected(5)
        assert (await health(http))["clients"] == 2

        await publish_event(http, "todo-created", {"id": 1, "title": "New Todo"}, api_key=key)
        for cl in (a, b):
            assert await cl.recv(5) == {"type": "todo:created", "payload": {"id": 1, "title": "New Todo"}}

        # Entities with hyphens, the `entity:action` spelling, non-object payloads.
        await publish_event(http, "line-item:created", {"orderId": 12, "qty": 2}, api_key=key)
        await publish_event(http, "counter-changed", 42, api_key=key)
        for cl in (a, b):
            ev = await cl.wait_event("line-item:created")
            assert ev["payload"] == {"orderId": 12, "qty": 2}
            assert (await cl.recv(5)) == {"type": "counter:changed", "payload": 42}

        # The payload is the body's own bytes (trimmed): key order survives.
        resp = await publish_event_raw(http, "user-updated", '  {"z":1,"a":2}\n', api_key=key)
        assert resp.status == 204
        assert list((await a.recv(5))["payload"]) == ["z", "a"]
        await b.recv(5)

        # Application-level ping (the heartbeat) is answered to the sender only.
        pong = await a.ping()
        assert pong["type"] == "pong"
        assert pong["payload"]["timestamp"].endswith("Z")
        await assert_silent(b)

        # Clients cannot publish.
        await a.send_json({"type": "todo:created", "payload": {}})
        err = await a.recv(5)
        assert err["type"] == "error"
        assert err["payload"]["message"] == "Unknown message type"
        await assert_silent(b)

        # Publishing needs the key the server was given; bad names and bodies are refused.
        with pytest.raises(HttpError) as e:
            await publish_event(http, "todo-created", {"id": 2})
        assert e.value.status == 401
        with pytest.raises(HttpError) as e:
            await publish_event(http, "todo-created", {"id": 2}, api_key="wrong")
        assert e.value.status == 401
        resp = await publish_event_raw(http, "todo-created", "", api_key=key)
        assert resp.status == 400 and resp.body["error"] == "invalid body"
        with pytest.raises(ValueError):
            event_path("todo")
        await assert_silent(a, 0.1)
        await assert_silent(b, 0.1)
