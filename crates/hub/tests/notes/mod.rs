//! `Notes`: a small protocol for the hub's v2 tests. It reads one command per message (a JSON
//! string, so v1 and v2 frames read alike):
//!
//! | message        | effect                                                  |
//! |----------------|---------------------------------------------------------|
//! | `j<room>`      | join the room (its stream)                              |
//! | `l<room>`      | leave it                                                |
//! | `f<k>=<v>`     | set the filter                                          |
//! | `u<user>`      | set the identity                                        |
//! | `a<text>`      | to everyone but the sender, kept in the system stream   |
//! | `r<room>:<t>`  | to the room but the sender, kept in the room's stream   |
//! | `d<user>:<t>`  | to one user's connections, kept in the system stream    |
//! | `t<k>=<v>:<t>` | to every connection whose filter matches, kept          |
//! | `p<room>:<t>`  | to the room, not kept (like presence)                   |
//! | `e<text>`      | echoed to the sender alone                              |

use serde_json::Value;
use switchboard_hub::{
    ConnectionHandle, Context, Filter, Identity, OpenInfo, Protocol, Publication, RawText, Text,
};

pub struct Notes;

fn command(frame: &Text) -> String {
    serde_json::from_slice::<String>(frame).unwrap_or_else(|_| frame.as_str().to_string())
}

/// A message body: `s` as a JSON string.
pub fn body(s: &str) -> Text {
    Text::from(Value::String(s.to_string()).to_string())
}

impl Protocol for Notes {
    type Decoder = RawText;

    fn name(&self) -> &'static str {
        "notes"
    }

    fn decoder(&self) -> RawText {
        RawText
    }

    fn system_stream(&self) -> Option<&'static str> {
        Some("all")
    }

    fn on_open(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, _: &OpenInfo) {
        cx.send(conn, body("hello"));
    }

    fn on_message(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, frame: Text) {
        let cmd = command(&frame);
        let (op, arg) = cmd.split_at(1);
        let split = |a: &str| {
            a.split_once(':')
                .map(|(x, y)| (x.to_string(), y.to_string()))
        };
        match op {
            "j" => {
                let _ = cx.join(conn, arg);
            }
            "l" => {
                cx.leave(conn, arg);
            }
            "f" => {
                let (k, v) = arg.split_once('=').unwrap();
                cx.set_filter(conn, Filter::new([(k, v)]));
            }
            "u" => cx.set_identity(conn, Identity::user(arg)),
            "a" => {
                cx.publish(Publication::to_all(body(arg)).except(conn).keep());
            }
            "r" => {
                let (room, t) = split(arg).unwrap();
                cx.publish(Publication::to_room(room, body(&t)).except(conn).keep());
            }
            "d" => {
                let (user, t) = split(arg).unwrap();
                cx.publish(Publication::to_user(user, body(&t)).keep());
            }
            "t" => {
                let (kv, t) = split(arg).unwrap();
                let (k, v) = kv.split_once('=').unwrap();
                let tags = vec![(k.to_string(), v.to_string())];
                cx.publish(Publication::to_all(body(&t)).filtered(tags).keep());
            }
            "p" => {
                let (room, t) = split(arg).unwrap();
                cx.publish(Publication::to_room(room, body(&t)));
            }
            "e" => {
                cx.send(conn, body(arg));
            }
            _ => cx.count_error("unknown"),
        }
    }
}
