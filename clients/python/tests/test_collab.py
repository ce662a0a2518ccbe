"""Collab flow: greeting, presence, edits to other members, broadcast, leave."""

import pytest
from helpers import FAST, assert_silent

from conftest import KEYS
from switchboard_clients import HttpError
from switchboard_clients.collab import CollabClient, CollabError, broadcast, presence_users, stats

P = "project-123"


async def test_collab_project_flow(server):
    url, http, key = server.ws("collab", "/ws"), server.http("collab"), KEYS["collab"]
    async with CollabClient(url, user_id="alice", backoff=FAST) as a:
        await a.wait_connected(5)  # a's connection opens first: presence lists it first
        async with CollabClient(url, backoff=FAST) as b:
            await b.wait_connected(5)
            await _project_flow(a, b, http, key)


async def _project_flow(a, b, http, key):
    """The flow itself, with a connected before b."""
    assert a.client_id.startswith("client_") and a.client_id != b.client_id

    presence = await a.join_project(P)
    assert presence_users(presence) == ["alice"]
    assert presence["payload"]["userCount"] == 1
    presence = await b.join_project(P, user_id="bob")
    assert presence_users(presence) == ["alice", "bob"]
    got = await a.recv_match(lambda m: m["type"] == "USER_PRESENCE" and m["payload"]["userCount"] == 2)
    assert [u["clientId"] for u in got["payload"]["activeUsers"]] == [a.client_id, b.client_id]
    a.drain()
    b.drain()

    # An edit reaches the other member, with projectId and the sender's userId; not the sender.
    task = {"id": "task-456", "title": "Updated task title"}
    await a.send_task_update(P, task, "op-789")
    got = await b.recv_match("TASK_UPDATE", 5)
    assert got["payload"] == task and got["operationId"] == "op-789"
    assert got["projectId"] == P and got["userId"] == "alice"
    assert isinstance(got["timestamp"], int)
    await assert_silent(a)

    await b.send_comment_create(P, {"id": "comment-12", "body": "Looks good"})
    got = await a.recv_match("COMMENT_CREATE", 5)
    assert got["userId"] == "bob" and "operationId" not in got

    # An edit for a project not joined is refused to the sender only.
    await a.send_task_create("project-999", {"id": "t"})
    err = await a.recv_match("ERROR", 5)
    assert err["message"] == "Not a member of this project"
    await assert_silent(b)

    # Backend broadcast reaches every member.
    res = await broadcast(http, "TASKS_REORDERED", P, api_key=key)
    assert res["success"] is True and res["clientCount"] == 2
    for cl in (a, b):
        got = await cl.recv_match("TASKS_REORDERED", 5)
        assert "payload" not in got and got["userId"] is None
        assert got["operationId"].startswith("broadcast-")
    with pytest.raises(HttpError) as e:
        await broadcast(http, "TASK_UPDATE", P, {"id": 1})
    assert e.value.status == 401
    with pytest.raises(HttpError) as e:
        await broadcast(http, "USER_PRESENCE", P, api_key=key)
    assert e.value.status == 400

    st = await stats(http)
    assert st["projectStats"][P]["clients"] == [a.client_id, b.client_id]

    # Leaving sends presence to those who remain.
    await a.leave_project(P)
    got = await b.recv_match("USER_PRESENCE", 5)
    assert presence_users(got) == ["bob"]
    assert a.projects == []


async def test_collab_room_limit_error_is_raised(server):
    async with CollabClient(server.ws("collab", "/ws"), backoff=FAST) as a:
        await a.wait_connected(5)
        for i in range(64):
            await a.join_project(f"p-{i}")
        with pytest.raises(CollabError):
            await a.join_project("p-64")
        assert len(a.projects) == 64


async def test_collab_refused_upgrades_stop_the_client(server):
    # A wrong path (404) and a browser origin that is not allowed (403) are final: no retry loop.
    from switchboard_clients import HandshakeRefused

    cases = [
        (server.ws("collab", "/nope"), None, 404),
        (server.ws("collab", "/ws"), "http://evil.example", 403),
    ]
    for url, origin, status in cases:
        client = CollabClient(url, origin=origin, backoff=FAST)
        with pytest.raises(HandshakeRefused) as e:
            await client.wait_connected(5)
        assert e.value.status == status
        await client.close()
    # The default allowed origin is accepted.
    async with CollabClient(server.ws("collab", "/ws"), origin="http://localhost:3000") as ok:
        await ok.wait_connected(5)
