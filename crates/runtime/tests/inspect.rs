//! What the hub task gives an inspector: counters and bounded lists, and a live tail of a room
//! that taps the room only while a watcher is alive, shows publications sampled and cut short.

use std::time::Duration;

use switchboard_hub::{Publication, TapError, MAX_TAPS};
use switchboard_runtime::clock::HubClock;
use switchboard_runtime::inspect::{Query, TAIL_PAYLOAD_BYTES};
use switchboard_runtime::{Endpoint, System};

fn collab() -> std::sync::Arc<System> {
    let spec = switchboard_protocol::system("collab").expect("collab is a system");
    System::start(
        Endpoint::new(spec),
        Default::default(),
        Default::default(),
        HubClock::default(),
        None,
    )
}

#[tokio::test]
async fn a_tail_taps_its_room_while_watched_and_shows_publications_cut_short() {
    let system = collab();
    let hub = system.hub();
    let mut tail = hub.tail("project:p-1").await.unwrap().unwrap();
    assert_eq!(tail.room(), "project:p-1");
    let tapped = hub.inspect(Query::counters()).await.unwrap().tapped;
    assert_eq!(tapped, ["project:p-1"]);

    let long = format!(r#"{{"type":"TASK_UPDATE","text":"{}"}}"#, "é".repeat(400));
    hub.publish(Publication::to_room("project:p-1", long.clone()))
        .await
        .unwrap();
    hub.publish(Publication::to_room("project:other", "{}"))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), tail.next())
        .await
        .expect("a tapped publication")
        .expect("the hub runs");
    assert_eq!(event.room, "project:p-1");
    assert_eq!(event.bytes, long.len());
    assert!(event.truncated);
    assert!(event.payload.len() <= TAIL_PAYLOAD_BYTES);
    assert!(long.starts_with(&event.payload));
    assert_eq!(event.skipped, 0);

    // A second watcher shares the tap; the room is untapped with the last one.
    let second = hub.tail("project:p-1").await.unwrap().unwrap();
    drop(tail);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let tapped = hub.inspect(Query::counters()).await.unwrap().tapped;
    assert_eq!(tapped, ["project:p-1"], "still watched");
    drop(second);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let tapped = hub.inspect(Query::counters()).await.unwrap().tapped;
    assert!(tapped.is_empty(), "nobody watches: {tapped:?}");
}

#[tokio::test]
async fn a_tail_is_sampled_at_ten_a_second() {
    let system = collab();
    let hub = system.hub();
    let mut tail = hub.tail("project:busy").await.unwrap().unwrap();
    let started = std::time::Instant::now();
    // 500 publications over about half a second.
    for i in 0..500 {
        let p = Publication::to_room("project:busy", format!(r#"{{"n":{i}}}"#));
        hub.publish(p).await.unwrap();
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // One more, later, to carry the count of what was passed over since the last one shown.
    hub.publish(Publication::to_room("project:busy", r#"{"n":"last"}"#))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut shown = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), tail.next()).await {
        shown.push(e);
    }
    let total = elapsed.as_secs_f64() + 0.25;
    let most = (10.0 * total).ceil() as usize + 1;
    assert!(
        (2..=most).contains(&shown.len()),
        "{} shown in {total:.2} s",
        shown.len()
    );
    let accounted: u64 = shown.iter().map(|e| 1 + e.skipped).sum();
    assert_eq!(accounted, 501, "every publication shown or counted");
    assert_eq!(shown.last().unwrap().payload, r#"{"n":"last"}"#);
}

#[tokio::test]
async fn at_most_max_taps_rooms_are_tailed_at_once() {
    let system = collab();
    let hub = system.hub();
    let mut tails = Vec::new();
    for i in 0..MAX_TAPS {
        tails.push(hub.tail(&format!("project:{i}")).await.unwrap().unwrap());
    }
    let refused = hub.tail("project:one-more").await.unwrap();
    assert_eq!(
        refused.err(),
        Some(TapError::TooManyTaps { limit: MAX_TAPS })
    );
    // Another watcher of a tapped room is fine.
    hub.tail("project:0").await.unwrap().unwrap();
    tails.pop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    hub.tail("project:one-more").await.unwrap().unwrap();
}

#[tokio::test]
async fn an_inspection_lists_nothing_it_was_not_asked_for() {
    let system = collab();
    let inspection = system.hub().inspect(Query::counters()).await.unwrap();
    assert_eq!(inspection.stats.connections, 0);
    assert!(inspection.rooms.is_empty() && inspection.connections.is_empty());
    let inspection = system.hub().inspect(Query::lists("x")).await.unwrap();
    assert_eq!(inspection.rooms_matching, 0);
    assert_eq!(system.hub().connection_detail(1).await.unwrap(), None);
}
