"""The client API as an application uses it, type-checked by ``mypy --strict``
(``tests/test_types.py``) and never run. Lines ending in ``# type: ignore[...]`` must fail to
type-check (an ignore that is not needed is an error under ``--strict``): they show what the
types refuse."""

from __future__ import annotations

from typing import assert_type

from switchboard_clients import v2
from switchboard_clients.afc import AfcClient, Event, is_event, publish_event
from switchboard_clients.collab import CollabClient, UserPresence, broadcast, presence_users
from switchboard_clients.dcdock import DcdockClient, Subscribed, is_assignment_event, publish
from switchboard_clients.laptimes import ChangeNotice, ErrorReply, LaptimesClient, is_notice
from switchboard_clients.race import RaceClient, Update, is_update, publish_update


def use(*values: object) -> None:
    """Stands for whatever the application does."""


async def laptimes_usage() -> None:
    def on_message(msg: ChangeNotice | ErrorReply) -> None:
        if is_notice(msg):
            use(msg["table"].upper())
        else:
            use(msg["message"])

    lt = LaptimesClient("ws://localhost:3002/", on_message=on_message, queue_size=100)
    await lt.start()
    sent = await lt.notify("times", by="lab-3")
    assert_type(sent, ChangeNotice)
    notice = await lt.recv_match(is_notice)
    assert_type(notice, ChangeNotice)
    await lt.send({"table": "cars", "operation": "CHANGE"})
    await lt.send({"table": "cars"})  # type: ignore[typeddict-item]
    LaptimesClient(queue_size="10")  # type: ignore[arg-type]
    await lt.close()


async def afc_usage() -> None:
    async with AfcClient("ws://localhost:4001/ws", protocol="v1") as afc:
        event = await afc.wait_event("todo:created")
        assert_type(event, Event)
        async for msg in afc:
            if is_event(msg):
                use(msg["payload"])
            elif msg["type"] == "pong":
                use(msg["payload"]["timestamp"])
        await publish_event("http://localhost:4001", "todo-created", {"id": 1})
        await afc.send({"type": "todo:created"})  # type: ignore[typeddict-item]
    AfcClient(protocol="v3")  # type: ignore[arg-type]


async def race_usage() -> None:
    race = RaceClient("ws://localhost:3000/ws", sessions=["race-2024"])
    reply = await race.subscribe("race-2025")
    if reply is not None:
        use(reply["data"]["sessionId"])
    update = await race.recv_match(is_update)
    assert_type(update, Update)
    await publish_update(
        "http://localhost:3000", "race-2024", "lap_update", {"driverId": "VER"}, api_key="k"
    )
    url = "http://localhost:3000"
    await publish_update(url, "race-2024", "lap_updated", {}, api_key="k")  # type: ignore[arg-type]
    await race.send({"type": "lap_update", "data": {}})  # type: ignore[arg-type, misc]


async def collab_usage() -> None:
    collab = CollabClient("ws://localhost:3001/ws", user_id="user_2abc")
    presence = await collab.join_project("project-123")
    if presence is not None:
        assert_type(presence, UserPresence)
        use([u["userId"] for u in presence["payload"]["activeUsers"]], presence_users(presence))
    ack = await collab.send_task_update("project-123", {"id": "task-456"}, "op-1")
    if ack is not None and "offset" in ack:
        use(ack["offset"] + 1)
    await collab.send_edit("TASK_EXPLODE", "project-123", {})  # type: ignore[arg-type]
    await collab.send({"type": "SET_USER", "userId": "u"})
    await collab.send({"type": "SET_USER"})  # type: ignore[arg-type]
    response = await broadcast("http://localhost:3001", "TASKS_REORDERED", "project-123")
    use(response["clientCount"])


async def dcdock_usage() -> None:
    dock = DcdockClient("ws://localhost:8000/api/ws", token=lambda: "jwt", direction="IB")
    reply = await dock.subscribe("OB")
    if reply is not None:
        assert_type(reply, Subscribed)
        use(reply["filters"].get("direction"))
    await dock.subscribe("INBOUND")  # type: ignore[arg-type]
    msg = await dock.recv()
    if is_assignment_event(msg):
        use(msg["action"], msg["data"].get("load"))
    elif msg["type"] == "conflict_detected":
        use(msg["current_version"] - msg["attempted_version"])
    await publish(
        "http://localhost:8000",
        {"type": "conflict_detected", "assignment_id": 7, "current_version": 5,
         "attempted_version": 4, "current_data": {}, "message": "m", "user_id": 3},
        api_key="k",
    )
    DcdockClient("ws://localhost:8000/api/ws")  # type: ignore[call-arg]


def events(client: LaptimesClient) -> None:
    def on_gap(event: v2.GapEvent) -> None:
        use(event["from"], event["to"])

    client.on("gap", on_gap)
    client.on("session", lambda e: use(e["id"], e["resumed"]))
    client.on("gaps", on_gap)  # type: ignore[call-overload]
    future = client.expect_event("not_recovered", lambda e: e["reason"] == "epoch")
    assert_type(future.result(), v2.NotRecoveredEvent)
    use(client.positions["all"]["offset"])

    notice: ChangeNotice = {"table": "t", "operation": "CHANGE"}
    frame: v2.ServerFrame[ChangeNotice | ErrorReply] = {
        "sb": "pub",
        "stream": "all",
        "epoch": "69cecfdf41150212",
        "offset": 1,
        "msg": notice,
    }
    if frame["sb"] == "pub":
        use(frame["msg"], frame["offset"])
    bad: v2.ClientFrame[ChangeNotice] = {"sb": "pub", "msg": notice}  # type: ignore[typeddict-item]
    bad2: v2.SubscribedFrame = {"sb": "subscribed", "recovered": True}  # type: ignore[assignment]
    use(bad, bad2)
