//! The `switchboard` binary with `--redis-url`: two processes, one Redis, one relay across them;
//! `/health` and `/metrics` report the backplane. Needs `redis-server` on PATH
//! (`scripts/ensure-redis.sh` installs it; `scripts/test.sh` runs that first).

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::http::get;
use crate::processes::{free_port, node, redis, wait_listening, wait_until_up};
use crate::support::{connect, next_text, notice};

#[tokio::test]
async fn two_binaries_relay_through_redis_and_report_the_backplane() {
    let redis_port = free_port();
    let _redis = redis(redis_port);
    let (pa, pb) = (free_port(), free_port());
    let (_a, _b) = (
        node("laptimes", pa, redis_port, &[]),
        node("laptimes", pb, redis_port, &[]),
    );
    let (addr_a, addr_b) = (([127, 0, 0, 1], pa).into(), ([127, 0, 0, 1], pb).into());
    wait_listening(addr_a).await;
    wait_listening(addr_b).await;
    let health = wait_until_up(addr_a).await;
    assert_eq!(health["status"], "ok");
    assert!(health["backplane"]["node"].is_string(), "{health}");
    wait_until_up(addr_b).await;

    let mut on_a = connect(addr_a, "/").await;
    let mut on_b = connect(addr_b, "/").await;
    // Registered once answered: a bad frame gets an error reply.
    on_b.send(Message::text("{}")).await.unwrap();
    next_text(&mut on_b).await;
    let n = notice("drivers");
    on_a.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(
        next_text(&mut on_b).await,
        n,
        "relayed from node A to a client on node B"
    );

    let metrics = get(addr_a, "/metrics").await.text();
    assert!(
        metrics.contains(r#"switchboard_backplane_up{system="laptimes"} 1"#),
        "{metrics}"
    );
}
