//! The embedding example publishes from code and its client receives the event.

use serde_json::Value;
use tokio::net::TcpListener;

#[tokio::test]
async fn example_embed_publishes_to_a_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let got = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        crate::embed::run(listener),
    )
    .await
    .expect("the example finishes")
    .expect("the example succeeds");
    let event: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(event["type"], "assignment_created");
    assert_eq!(event["assignment_id"], 101);
    assert_eq!(event["action"], "CREATE");
    assert_eq!(event["data"]["load"]["direction"], "IB");
    assert!(
        event["timestamp"].as_str().is_some_and(|t| t.len() == 19),
        "{event}"
    );
}
