//! Embedding the hub in your own tokio service.
//!
//! The service starts DCDock's endpoint (WebSocket `/api/ws` plus its HTTP endpoints) on a
//! listener it owns (a `System` started in a `Process`, served by `switchboard_hyper::serve`), and publishes an "assignment created" event straight
//! from its own code: no HTTP round trip, the same fan-out and direction filters as
//! `POST /api/ws/publish`. A dock-board client, holding a token the service signed, prints what
//! it receives.
//!
//! ```text
//! cargo run -p switchboard-hyper --example embed
//! ```

use std::error::Error;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use switchboard_hub::Config;
use switchboard_hub::UnixTime;
use switchboard_protocol::dcdock::v1::{
    event_publication, Action, AssignmentChange, Id, ServerEvent,
};
use switchboard_protocol::Options;
use switchboard_runtime::gate::JwtKeys;
use switchboard_runtime::{Endpoint, Process, System};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Errors the example passes up.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// The secret the service signs its users' tokens with.
const JWT_SECRET: &str = "embed-example-secret";

/// A token for `user`, valid for ten minutes, as the service's login would issue it.
fn token_for(user: u64) -> Result<String, BoxError> {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 600;
    let claims =
        json!({"sub": user.to_string(), "email": format!("user{user}@example.com"), "exp": exp});
    Ok(encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )?)
}

/// The next text frame, waiting at most five seconds.
async fn next_text<S>(ws: &mut S) -> Result<String, BoxError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await?
            .ok_or("the connection closed")??;
        if let Message::Text(text) = msg {
            return Ok(text.to_string());
        }
    }
}

/// Serve DCDock on `listener`, connect one client, publish one event from code, and return the
/// frame the client received.
pub async fn run(listener: TcpListener) -> Result<String, BoxError> {
    let spec = switchboard_protocol::system("dcdock").ok_or("dcdock is not registered")?;
    let mut endpoint = Endpoint::new(spec);
    endpoint.jwt = JwtKeys::single(JWT_SECRET);
    let process = Process::default();
    let system = System::start(
        endpoint,
        Options::default(),
        Config::default(),
        process.clock.clone(),
        None,
    );
    let server = switchboard_hyper::serve(&process, listener, system)?;
    println!("serving dcdock on ws://{}/api/ws", server.local_addr());

    // A dock-board user connects and asks for inbound loads only.
    let url = format!(
        "ws://{}/api/ws?token={}",
        server.local_addr(),
        token_for(7)?
    );
    let (mut board, _) = tokio_tungstenite::connect_async(url).await?;
    println!("client got: {}", next_text(&mut board).await?);
    let subscribe = json!({"type": "subscribe", "filters": {"direction": "IB"}});
    futures_util::SinkExt::send(&mut board, Message::text(subscribe.to_string())).await?;
    println!("client got: {}", next_text(&mut board).await?);

    // The service's own code created an assignment: tell every board that wants to know.
    let data = json!({"id": 101, "dock": "D4", "load": {"id": 5001, "direction": "IB"}});
    let event = ServerEvent::AssignmentCreated(AssignmentChange {
        timestamp: None, // filled with the current time
        assignment_id: Id::Number(101),
        action: Action::Create,
        user_id: Id::Number(7),
        user_email: "user7@example.com".to_string(),
        data: data.as_object().cloned().unwrap_or_default(),
    });
    let delivered = server
        .hub()
        .publish(event_publication(
            &event,
            UnixTime::from(std::time::SystemTime::now()),
        ))
        .await?;
    println!("published assignment_created to {delivered} connection(s)");

    let got = next_text(&mut board).await?;
    println!("client got: {got}");
    server.shutdown().await?;
    Ok(got)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    run(listener).await?;
    Ok(())
}
