"""Laptimes flow: a change notice reaches every other client, never the sender."""

from helpers import FAST, assert_silent

from switchboard_clients.laptimes import LaptimesClient, is_error, is_notice


async def test_laptimes_notice_relayed_to_others_only(server):
    url = server.ws("laptimes", "/any/path")
    async with LaptimesClient(url, backoff=FAST) as a, LaptimesClient(url, backoff=FAST) as b, \
            LaptimesClient(url, backoff=FAST) as c:
        for cl in (a, b, c):
            await cl.wait_connected(5)
        await assert_silent(a, 0.1)  # no greeting

        sent = await a.notify("times")
        for other in (b, c):
            got = await other.recv(5)
            assert is_notice(got)
            assert got == sent
        await assert_silent(a)

        # Extra fields travel untouched, and a null timestamp is allowed.
        sent = await b.notify("tracks", timestamp=None, by="lab-3", ids=[4, 7])
        assert await a.recv(5) == sent
        assert await c.recv(5) == sent
        await assert_silent(b)

        # The exact text is relayed (key order kept).
        await c.send_text('{"operation":"CHANGE","table":"cars"}')
        for other in (a, b):
            got = await other.recv(5)
            assert list(got) == ["operation", "table"]

        # A broken notice is answered to its sender alone.
        await a.send_text("[1]")
        err = await a.recv(5)
        assert is_error(err)
        assert err["message"] == "Invalid change notice"
        assert err["details"] == "expected a JSON object"
        await a.send_json({"table": "cars"})
        err = await a.recv(5)
        assert err["details"] == "missing field `operation`"
        await assert_silent(b)
        await assert_silent(c, 0.05)
        assert a.connected and a.connections == 1
