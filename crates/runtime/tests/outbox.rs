//! The outbox over real loopback sockets: frames written directly while the socket takes them,
//! queued in order when it does not, drained by the flusher once the peer reads, and a close
//! frame after everything queued before it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use switchboard_hub::{CloseCode, Text};
use switchboard_runtime::outbox::{Corks, FlushSink, Outbox};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::Message;

use support::{expect_numbered, numbered, NoHub};

type Client = tokio_tungstenite::WebSocketStream<TcpStream>;

fn hub() -> Arc<dyn FlushSink> {
    Arc::new(NoHub)
}

/// What became of one frame handed to the outbox the way the hub task hands them over (staged,
/// then written after its drain).
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Written(usize),
    Queued,
    Dropped,
}

fn send(out: &Arc<Outbox>, payload: Text) -> Sent {
    let mut corks = Corks::default();
    let p = corks.add(payload);
    corks.stage((), 0, p);
    let sent = match corks.write(0, out) {
        None => Sent::Dropped,
        Some(0) => Sent::Queued,
        Some(n) => Sent::Written(n),
    };
    corks.clear();
    sent
}

/// A server-side outbox and the WebSocket client at the other end of its socket.
async fn pair() -> (std::sync::Arc<Outbox>, Client) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        tokio_tungstenite::client_async(
            format!("ws://{addr}/"),
            TcpStream::connect(addr).await.unwrap(),
        )
        .await
        .unwrap()
        .0
    });
    let (mut tcp, _) = listener.accept().await.unwrap();
    support::accept_upgrade(&mut tcp).await;
    let out = Outbox::over(tcp, hub());
    (out, client.await.unwrap())
}

/// Write frames until the socket pushes back, without the client reading; returns how many
/// frames were handed over and how many of them were written at once.
fn fill(out: &std::sync::Arc<Outbox>, size: usize, max: usize) -> (usize, usize) {
    let mut direct = 0;
    for i in 0..max {
        match send(out, numbered(i, size)) {
            Sent::Written(n) => {
                assert_eq!(n, size, "a direct write reports the payload bytes");
                direct += 1;
            }
            Sent::Queued => {
                // Once something is queued, everything after it must queue behind it.
                for j in i + 1..i + 64 {
                    assert_eq!(send(out, numbered(j, size)), Sent::Queued);
                }
                return (i + 64, direct);
            }
            Sent::Dropped => panic!("frame {i} dropped on an open connection"),
        }
    }
    panic!("the socket took {max} frames without pushing back")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_in_order_once_the_peer_reads() {
    let (out, mut client) = pair().await;
    let size = 16 * 1024 + 7; // odd-sized, so writes end mid-frame
    let (sent, direct) = fill(&out, size, 100_000);
    assert!(direct > 0, "an idle socket takes frames directly");
    expect_numbered(&mut client, 0, sent, size).await;
    tokio::time::timeout(Duration::from_secs(5), out.drained())
        .await
        .expect("the outbox reports drained");
    // With the backlog gone, frames are written directly again.
    assert!(matches!(send(&out, numbered(sent, 10)), Sent::Written(10)));
    expect_numbered_from(&mut client, sent, 10).await;
}

async fn expect_numbered_from(client: &mut Client, i: usize, size: usize) {
    let msg = client.next().await.unwrap().unwrap();
    assert_eq!(
        msg.into_text().unwrap().as_str(),
        numbered(i, size).as_str()
    );
}

#[tokio::test]
async fn close_goes_after_the_backlog_and_nothing_after_it() {
    let (out, mut client) = pair().await;
    let size = 8 * 1024;
    let (sent, _) = fill(&out, size, 100_000);
    out.close(CloseCode(4008), "too slow");
    assert!(out.is_ended());
    assert_eq!(send(&out, numbered(sent, size)), Sent::Dropped);
    expect_numbered(&mut client, 0, sent, size).await;
    match client.next().await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, WsCloseCode::from(4008));
            assert_eq!(frame.reason.as_str(), "too slow");
        }
        other => panic!("expected the close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn an_abandoned_outbox_stops_its_flusher_and_frees_the_socket() {
    let (out, mut client) = pair().await;
    let (_, _) = fill(&out, 8 * 1024, 100_000);
    out.abandon();
    assert_eq!(send(&out, numbered(0, 10)), Sent::Dropped);
    drop(out);
    // The flusher let go of its socket: the client reads what was sent, then the end.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(_)) = client.next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the socket closed once the outbox was abandoned"
    );
}

#[tokio::test]
async fn raw_writes_to_a_peer_that_does_not_read_are_bounded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let out = Outbox::over(tcp, hub());
    // Pongs for a peer that floods pings and never reads: the kernel's buffers fill, then at
    // most RAW_LIMIT more is queued before the connection is told to end.
    let pong = bytes::Bytes::from(vec![0x8a_u8; 125]);
    let mut total = 0usize;
    while !out.is_ended() {
        out.pong(pong.clone());
        total += pong.len();
        assert!(
            total < 256 << 20,
            "{total} bytes accepted for a peer that does not read"
        );
    }
    assert!(total > switchboard_runtime::outbox::RAW_LIMIT);
    drop(peer);
}

/// An event-stream outbox over a real socket: each frame an event (a frame with line breaks
/// over several `data:` lines), a ping a comment, a close a comment naming the code; the v2
/// framing adds the session's positions as ids to the frames that move them.
#[tokio::test]
async fn event_stream_framing_on_the_wire() {
    use switchboard_runtime::outbox::Framing;
    use tokio::io::AsyncReadExt;

    for (framing, frames, expected) in [
        (
            Framing::Sse,
            vec!["{\"a\":1}", "{\"b\":\n2,\r\n\"c\":\r3}\n"],
            "data: {\"a\":1}\n\ndata: {\"b\":\ndata: 2,\ndata: \"c\":\ndata: 3}\ndata: \n\n",
        ),
        (
            Framing::SseV2,
            vec![
                r#"{"sb":"session","session":"3865b85aa318fb113d43cb337c20004a","resumed":false}"#,
                r#"{"sb":"msg","msg":{"x":1}}"#,
                r#"{"sb":"pub","stream":"all","epoch":"69cecfdf41150212","offset":42,"msg":{}}"#,
            ],
            concat!(
                "id: 3865b85aa318fb113d43cb337c20004a\n",
                "data: {\"sb\":\"session\",\"session\":\"3865b85aa318fb113d43cb337c20004a\",\"resumed\":false}\n\n",
                "data: {\"sb\":\"msg\",\"msg\":{\"x\":1}}\n\n",
                "id: 3865b85aa318fb113d43cb337c20004a.all~69cecfdf41150212~42\n",
                "data: {\"sb\":\"pub\",\"stream\":\"all\",\"epoch\":\"69cecfdf41150212\",\"offset\":42,\"msg\":{}}\n\n",
            ),
        ),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let out = Outbox::framed(hub(), framing);
        out.connect(tcp.into());
        let mut counted = 0;
        for frame in &frames {
            counted += frame.len();
            let Sent::Written(n) = send(&out, Text::from(frame.to_string())) else {
                panic!("an idle socket takes a frame at once");
            };
            // The hub's accounting is the frame's length, whatever the framing adds.
            assert_eq!(n, frame.len());
        }
        assert!(counted > 0);
        out.ping();
        out.close(CloseCode::SLOW_CONSUMER, "slow\nconsumer");
        out.drained().await;
        drop(out);
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        let want = format!("{expected}:\n\n: close 4008 slow consumer\n\n");
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }
}

#[tokio::test]
async fn staged_frames_reach_each_connection_in_order_and_at_once() {
    let (a, mut client_a) = pair().await;
    let (b, mut client_b) = pair().await;
    let mut corks = Corks::default();
    // Two publications to both, interleaved as a hub drain stages them, then a third to `b`.
    for i in 0..2 {
        let p = corks.add(numbered(i, 20));
        corks.stage('a', 0, p);
        corks.stage('b', 1, p);
    }
    let p = corks.add(numbered(2, 20));
    corks.stage('b', 1, p);
    assert_eq!(corks.len(), 2, "one entry per connection");
    assert_eq!((corks.conn(0), corks.conn(1)), ('a', 'b'));
    assert_eq!(corks.index_of('b', 1), Some(1));
    assert_eq!(corks.write(0, &a), Some(40), "both of a's frames, at once");
    assert_eq!(corks.index_of('a', 0), None, "written: no longer staged");
    assert_eq!(corks.write(1, &b), Some(60));
    corks.clear();
    expect_numbered(&mut client_a, 0, 2, 20).await;
    expect_numbered(&mut client_b, 0, 3, 20).await;

    // A slot taken over by another connection: the old entry is not the new one's.
    let p = corks.add(numbered(9, 20));
    corks.stage('x', 0, p);
    let p = corks.add(numbered(2, 20));
    corks.stage('a', 0, p);
    assert_eq!(corks.len(), 2);
    assert_eq!(corks.index_of('x', 0), None);
    assert_eq!(corks.index_of('a', 0), Some(1));
    corks.discard(0);
    assert_eq!(
        corks.index_of('a', 0),
        Some(1),
        "discarding the old entry keeps the new"
    );
    // A connection closed meanwhile takes none of its frames.
    a.close(CloseCode(1000), "bye");
    assert_eq!(corks.write(1, &a), None);
    corks.clear();
    match client_a.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, WsCloseCode::from(1000)),
        other => panic!("expected the close frame, got {other:?}"),
    }
}

/// The fan-out's own text-frame header is the one tungstenite writes, at every length boundary.
#[test]
fn text_frame_headers_match_tungstenite() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
    for len in [
        0,
        1,
        125,
        126,
        127,
        65_535,
        65_536,
        1 << 20,
        u32::MAX as usize + 1,
    ] {
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Text),
            ..FrameHeader::default()
        };
        let mut want = Vec::new();
        header.format(len as u64, &mut want).unwrap();
        let (head, used) = switchboard_runtime::outbox::text_head(len);
        assert_eq!(
            &head[..used],
            &want[..],
            "header of a {len}-byte text frame"
        );
    }
}

/// Small frames are put together and sent by the hub task at once while the socket takes
/// them; when it takes only part of a send, the rest (from mid-frame) is queued behind it, then
/// everything after, and the peer reads every frame whole and in order once it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_the_socket_takes_in_part_is_finished_in_order() {
    let (out, mut client) = pair().await;
    let size = 301; // three frames and their headers per send: 909 bytes, odd-sized
    let mut corks = Corks::default();
    let mut staged = 0;
    let mut partial = None;
    for _ in 0..100_000 {
        for _ in 0..3 {
            let p = corks.add(numbered(staged, size));
            corks.stage((), 0, p);
            staged += 1;
        }
        let written = corks
            .write(0, &out)
            .expect("an open connection takes its frames");
        corks.clear();
        assert_eq!(written % size, 0, "only whole frames are reported written");
        if written < 3 * size {
            partial = Some(written / size);
            break;
        }
    }
    let partial = partial.expect("the socket pushed back");
    // Behind the backlog, frames wait in the queue.
    let p = corks.add(numbered(staged, size));
    corks.stage((), 0, p);
    assert_eq!(corks.write(0, &out), Some(0), "queued behind the backlog");
    corks.clear();
    staged += 1;
    expect_numbered(&mut client, 0, staged, size).await;
    tokio::time::timeout(Duration::from_secs(5), out.drained())
        .await
        .expect("the outbox reports drained");
    eprintln!("the socket took {partial} of the last send's 3 frames whole");
}

/// A peer that reset the connection: the send straight from the hub task fails, the outbox
/// ends (its connection task is told), and it takes nothing more.
#[tokio::test]
async fn a_direct_send_to_a_reset_peer_ends_the_outbox() {
    let (out, client) = pair().await;
    // Close with SO_LINGER 0: the kernel answers with a reset, and a later send fails.
    let tcp = client.into_inner();
    tcp.set_zero_linger().unwrap();
    drop(tcp);
    let mut corks = Corks::default();
    let mut sent = 0;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while !out.is_ended() {
            let p = corks.add(numbered(sent, 20));
            corks.stage((), 0, p);
            sent += 1;
            // The reset may take a moment to arrive; until then sends still succeed.
            assert!(
                corks.write(0, &out).is_some(),
                "an open outbox takes frames"
            );
            corks.clear();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(ended.is_ok(), "the outbox never noticed the reset");
    std::future::poll_fn(|cx| out.poll_ended(cx)).await;
    let p = corks.add(numbered(sent, 20));
    corks.stage((), 0, p);
    assert_eq!(corks.write(0, &out), None, "a failed outbox takes nothing");
    corks.clear();
}
