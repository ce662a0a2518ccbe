//! Fault injection with real processes (issue 12): `switchboard` nodes and a `redis-server`,
//! with v2 clients that know every node. A binary of its own, and one test at a time: each
//! starts several processes and hundreds to thousands of clients, which on a two-core machine
//! must not run beside each other, nor beside the timing-sensitive end-to-end tests.

#[path = "../../../transport-tokio/tests/support/mod.rs"]
mod support;

#[path = "../e2e/http.rs"]
#[allow(dead_code)]
mod http;

#[path = "../e2e/processes.rs"]
mod processes;

mod failover;
mod shards;
mod state;

use tokio::sync::{Mutex, MutexGuard};

/// Held by each test for its whole run: the tests of this binary run one at a time (an async
/// lock: each test has its own runtime, and holds it across its awaits).
pub async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::const_new(());
    ONE.lock().await
}
