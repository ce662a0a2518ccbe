//! The Redis history engine against a real `redis-server`: positions every node agrees on,
//! published in offset order, and fetches answered exactly as the in-memory engine answers them.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use switchboard_backplane_redis::history::{positioned, HistoryKeys, RedisHistory};
use switchboard_hub::history::{
    Audience, Entry, Epoch, Fetched, HistoryLimits, MemoryHistory, Position, SessionId,
    Unrecoverable,
};
use switchboard_hub::{Instant, Text};

fn epoch(n: u64) -> Epoch {
    Epoch::parse(&format!("{n:016x}")).unwrap()
}

fn note(n: u64) -> Arc<Entry> {
    Arc::new(Entry {
        payload: Text::from(format!(r#"{{"n":{n}}}"#)),
        audience: if n % 3 == 0 {
            Audience::User(format!("u{n}"))
        } else {
            Audience::Everyone
        },
        tags: (n % 2 == 0).then(|| {
            [("direction".to_string(), "IB".to_string())]
                .into_iter()
                .collect()
        }),
        publisher: (n % 5 == 0).then(|| SessionId::parse(&format!("{n:032x}")).unwrap()),
    })
}

async fn engine(redis: &Redis, max_entries: usize, max_age: Duration) -> RedisHistory {
    let keys = HistoryKeys::new("test", max_entries, max_age);
    RedisHistory::new(keys, redis.connection().await.unwrap())
}

/// Two nodes appending to one stream at once: one epoch, offsets 1..=400 each given once, and
/// a fetch returns every entry under the offset it was given.
#[tokio::test]
async fn nodes_appending_at_once_get_contiguous_offsets() {
    let redis = Redis::start().await;
    let nodes = [
        engine(&redis, 1000, Duration::from_secs(300)).await,
        engine(&redis, 1000, Duration::from_secs(300)).await,
    ];
    let runs = nodes.iter().enumerate().map(|(i, node)| async move {
        let mut given = Vec::new();
        for k in 0..200u64 {
            let n = 1000 * (i as u64 + 1) + k;
            let p = node
                .append("all", &note(n), epoch(i as u64 + 1), None)
                .await
                .unwrap();
            given.push((p, n));
        }
        given
    });
    let given: Vec<Vec<(Position, u64)>> = futures_util::future::join_all(runs).await;
    let epoch = given[0][0].0.epoch;
    let mut by_offset = BTreeMap::new();
    for node in &given {
        let offsets: Vec<u64> = node.iter().map(|(p, _)| p.offset).collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "each node's own offsets grow"
        );
        for (p, n) in node {
            assert_eq!(p.epoch, epoch, "one epoch for the stream");
            assert!(
                by_offset.insert(p.offset, *n).is_none(),
                "offset {} twice",
                p.offset
            );
        }
    }
    assert_eq!(
        by_offset.keys().copied().collect::<Vec<_>>(),
        (1..=400).collect::<Vec<_>>()
    );

    let since = Some(Position { epoch, offset: 0 });
    let fetched = nodes[1].fetch("all", since, self::epoch(9)).await.unwrap();
    assert_eq!(fetched.top, Position { epoch, offset: 400 });
    let entries = fetched.entries.unwrap();
    assert_eq!(entries.len(), 400);
    for (offset, entry) in entries {
        assert_eq!(*entry, *note(by_offset[&offset]), "offset {offset}");
    }
}

/// What the append script publishes arrives in offset order, each message behind its position.
#[tokio::test]
async fn publications_arrive_positioned_in_offset_order() {
    let redis = Redis::start().await;
    let node = engine(&redis, 1000, Duration::from_secs(300)).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("sb:test:all").await.unwrap();
    for n in 1..=50u64 {
        let message = format!("message {n}");
        let p = node
            .append(
                "all",
                &note(n),
                epoch(1),
                Some(("sb:test:all", message.as_bytes())),
            )
            .await
            .unwrap();
        assert_eq!(p.offset, n);
    }
    let mut messages = pubsub.on_message();
    for n in 1..=50u64 {
        let m = tokio::time::timeout(WAIT, messages.next())
            .await
            .unwrap()
            .unwrap();
        let payload: Vec<u8> = m.get_payload().unwrap();
        let (p, message) = positioned(&payload).expect("a positioned message");
        assert_eq!((p.epoch, p.offset), (epoch(1), n));
        assert_eq!(message, format!("message {n}").as_bytes());
    }
}

/// The same appends into Redis and into the in-memory engine, then a fetch from every position
/// (and from another epoch, and beyond the top): the same answers, entries included.
#[tokio::test]
async fn fetches_answer_as_the_memory_engine_does() {
    let redis = Redis::start().await;
    let node = engine(&redis, 5, Duration::from_secs(300)).await;
    let limits = HistoryLimits {
        max_entries: 5,
        ..HistoryLimits::default()
    };
    let mut memory = MemoryHistory::new(limits, 1);
    let now = Instant::from_millis(1);
    // A stream nobody published into: its top only, offset 0, in both.
    let fresh = node.fetch("room:empty", None, epoch(3)).await.unwrap();
    assert_eq!(
        fresh.top,
        Position {
            epoch: epoch(3),
            offset: 0
        }
    );
    assert_eq!(memory.fetch(now, "room:empty", None).top.offset, 0);

    let mut redis_epoch = None;
    for n in 1..=12 {
        let p = node
            .append("room:r", &note(n), epoch(2), None)
            .await
            .unwrap();
        let q = memory.append(now, "room:r", note(n));
        assert_eq!(p.offset, q.offset);
        redis_epoch = Some(p.epoch);
    }
    let (re, me) = (redis_epoch.unwrap(), memory.top("room:r").unwrap().epoch);
    let same = |a: &Fetched, b: &Fetched, what: &str| {
        assert_eq!(a.top.offset, b.top.offset, "{what}: top");
        match (&a.entries, &b.entries) {
            (Ok(x), Ok(y)) => {
                let x: Vec<_> = x.iter().map(|(o, e)| (*o, (**e).clone())).collect();
                let y: Vec<_> = y.iter().map(|(o, e)| (*o, (**e).clone())).collect();
                assert_eq!(x, y, "{what}: entries");
            }
            (x, y) => assert_eq!(x.as_ref().err(), y.as_ref().err(), "{what}"),
        }
    };
    for offset in 0..=13 {
        let a = node
            .fetch("room:r", Some(Position { epoch: re, offset }), epoch(9))
            .await
            .unwrap();
        let b = memory.fetch(now, "room:r", Some(Position { epoch: me, offset }));
        same(&a, &b, &format!("since {offset}"));
    }
    let other = node
        .fetch(
            "room:r",
            Some(Position {
                epoch: epoch(77),
                offset: 11,
            }),
            epoch(9),
        )
        .await
        .unwrap();
    assert_eq!(other.entries.err(), Some(Unrecoverable::EpochChanged));
    let top_only = node.fetch("room:r", None, epoch(9)).await.unwrap();
    assert_eq!(
        (top_only.top, top_only.entries.unwrap().len()),
        (
            Position {
                epoch: re,
                offset: 12
            },
            0
        )
    );
}

/// Entries older than the age limit (by the Redis clock) are trimmed; newer ones are served.
#[tokio::test]
async fn the_age_limit_trims_by_the_redis_clock() {
    let redis = Redis::start().await;
    let node = engine(&redis, 1000, Duration::from_millis(1000)).await;
    for n in 1..=3 {
        node.append("all", &note(n), epoch(1), None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let p = node.append("all", &note(4), epoch(1), None).await.unwrap();
    assert_eq!(p.offset, 4, "the epoch outlives its entries");
    let at = |offset| {
        Some(Position {
            epoch: p.epoch,
            offset,
        })
    };
    let old = node.fetch("all", at(0), epoch(1)).await.unwrap();
    assert_eq!(old.entries.err(), Some(Unrecoverable::Trimmed));
    let recent = node.fetch("all", at(3), epoch(1)).await.unwrap();
    let entries = recent.entries.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, 4);
}

/// A Redis that lost its data (and its scripts): the next answer names a new epoch, and a client
/// at the old one is told it changed, never given a silent gap.
#[tokio::test]
async fn a_redis_that_lost_its_data_starts_a_new_epoch() {
    let redis = Redis::start().await;
    let node = engine(&redis, 1000, Duration::from_secs(300)).await;
    let mut before = None;
    for n in 1..=3 {
        before = Some(node.append("all", &note(n), epoch(1), None).await.unwrap());
    }
    let before = before.unwrap();
    let mut c = redis.connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut c)
        .await
        .unwrap();
    let after = node.fetch("all", Some(before), epoch(2)).await.unwrap();
    assert_eq!(
        after.top,
        Position {
            epoch: epoch(2),
            offset: 0
        }
    );
    assert_eq!(after.entries.err(), Some(Unrecoverable::EpochChanged));
    let next = node.append("all", &note(4), epoch(3), None).await.unwrap();
    assert_eq!(
        next,
        Position {
            epoch: epoch(2),
            offset: 1
        }
    );
}
