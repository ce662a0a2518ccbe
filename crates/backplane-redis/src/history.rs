//! A history engine in Redis that every node of a cluster shares: positions all nodes agree on
//! (issue 12, step 1; see `docs/design/cluster-history.md`). Not served yet: the hub's
//! `Append`/`Fetch` outputs are answered by the in-memory engine of each node until the
//! backplane drives this one.
//!
//! Each stream is a hash `sb:<system>:hm:<stream>` (`epoch`, `top`) and a Redis stream
//! `sb:<system>:h:<stream>` with one entry per publication, id `<offset>-0`. Appending is one Lua
//! script (atomic on the Redis): the offset is `HINCRBY top 1`, so offsets are contiguous however
//! many nodes append, and the same script publishes the caller's message with its position in
//! front ([`positioned`]), so a stream's channel carries its publications in offset order.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind, Value};
use switchboard_hub::history::{
    Audience, Entry, Epoch, Fetched, Position, SessionId, Unrecoverable,
};
use switchboard_hub::Text;

/// Appends one entry, publishes it, returns `{epoch, top}`.
///
/// KEYS: meta hash, entries stream. ARGV: candidate epoch, max entries, max age (ms), meta
/// lifetime (ms), channel (empty: publish nothing), message, then the entry's field/value pairs.
const APPEND: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
end
local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local args = {KEYS[2], 'MAXLEN', ARGV[2], string.format('%d-0', top), 'ms', string.format('%d', now)}
for i = 7, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('XADD', unpack(args))
local age = tonumber(ARGV[3])
for _, e in ipairs(redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 16)) do
  if tonumber(e[2][2]) + age > now then break end
  redis.call('XDEL', KEYS[2], e[1])
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[5], 'P' .. epoch .. ':' .. string.format('%d', top) .. ':' .. ARGV[6])
end
return {epoch, top}
"#;

/// What a client at a position missed: `{epoch, top}` alone, or with a status, `ok` followed by
/// the entries (as `XRANGE` gives them) or `epoch` / `ahead` / `trimmed`.
///
/// KEYS: meta hash, entries stream. ARGV: candidate epoch, the client's epoch (empty: only the
/// top), its offset, max age (ms), meta lifetime (ms).
const FETCH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local top = 0
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
else
  top = tonumber(redis.call('HGET', KEYS[1], 'top'))
end
if ARGV[2] == '' then return {epoch, top} end
if ARGV[2] ~= epoch then return {epoch, top, 'epoch'} end
local since = tonumber(ARGV[3])
if since > top then return {epoch, top, 'ahead'} end
if since == top then return {epoch, top, 'ok'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local entries = redis.call('XRANGE', KEYS[2], string.format('%d-0', since + 1), '+')
local first = entries[1]
if not first or first[1] ~= string.format('%d-0', since + 1)
    or tonumber(first[2][2]) + tonumber(ARGV[4]) <= now then
  return {epoch, top, 'trimmed'}
end
local out = {epoch, top, 'ok'}
for _, e in ipairs(entries) do out[#out + 1] = e end
return out
"#;

/// How a Redis history stores one system's streams.
#[derive(Debug, Clone)]
pub struct HistoryKeys {
    system: String,
    /// Entries kept per stream.
    pub max_entries: usize,
    /// How long an entry is kept (by the Redis clock).
    pub max_age: Duration,
    /// How long a stream's epoch and top outlive its last publication: a client that comes
    /// back at the top within it resumes with nothing missed; after it, a new epoch begins.
    pub meta_ttl: Duration,
}

impl HistoryKeys {
    /// `system`'s streams, keeping `max_entries` per stream for `max_age`; epochs live a day
    /// past a stream's last publication.
    pub fn new(system: &str, max_entries: usize, max_age: Duration) -> Self {
        HistoryKeys {
            system: system.to_string(),
            max_entries,
            max_age,
            meta_ttl: Duration::from_secs(24 * 3600).max(max_age),
        }
    }

    /// The hash holding `stream`'s epoch and top.
    pub fn meta_key(&self, stream: &str) -> String {
        format!("sb:{}:hm:{stream}", self.system)
    }

    /// The Redis stream holding `stream`'s entries.
    pub fn entries_key(&self, stream: &str) -> String {
        format!("sb:{}:h:{stream}", self.system)
    }
}

/// Why an answer from Redis could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Redis failed or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// Redis answered something this engine did not write (another writer, or a bug).
    #[error("unexpected answer from redis: {0}")]
    Malformed(&'static str),
}

/// The history engine over one Redis connection. Cheap to clone.
#[derive(Clone)]
pub struct RedisHistory {
    keys: Arc<HistoryKeys>,
    conn: MultiplexedConnection,
    /// SHA1s of the loaded scripts (append, fetch), loaded on first use and after a
    /// `NOSCRIPT` (a restarted or flushed Redis).
    shas: Arc<Mutex<[Option<String>; 2]>>,
}

impl std::fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHistory")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl RedisHistory {
    /// An engine for the streams `keys` describes, talking over `conn`.
    pub fn new(keys: HistoryKeys, conn: MultiplexedConnection) -> Self {
        RedisHistory {
            keys: Arc::new(keys),
            conn,
            shas: Arc::new(Mutex::new([None, None])),
        }
    }

    /// Keep `entry` as the next publication of `stream`; its position. With `publish`, the
    /// same script publishes `(channel, message)` as [`positioned`] bytes.
    /// `candidate` becomes the stream's epoch if it has none (a new stream, or a Redis that lost
    /// its data).
    pub async fn append(
        &self,
        stream: &str,
        entry: &Entry,
        candidate: Epoch,
        publish: Option<(&str, &[u8])>,
    ) -> Result<Position, HistoryError> {
        let keys = &self.keys;
        let (channel, message) = publish.unwrap_or(("", b""));
        let mut args: Vec<Vec<u8>> = vec![
            candidate.to_string().into_bytes(),
            keys.max_entries.to_string().into_bytes(),
            millis(keys.max_age).into_bytes(),
            millis(keys.meta_ttl).into_bytes(),
            channel.as_bytes().to_vec(),
            message.to_vec(),
        ];
        args.extend(fields(entry));
        let answer = self.eval(0, stream, args).await?;
        let Value::Array(items) = answer else {
            return Err(HistoryError::Malformed("append: not an array"));
        };
        let (epoch, top) = epoch_top(&items)?;
        Ok(Position { epoch, offset: top })
    }

    /// What a client at `since` missed of `stream` (or, without a position, only the top), as
    /// `MemoryHistory::fetch` answers it.
    pub async fn fetch(
        &self,
        stream: &str,
        since: Option<Position>,
        candidate: Epoch,
    ) -> Result<Fetched, HistoryError> {
        let keys = &self.keys;
        let (epoch, offset) = match since {
            Some(p) => (p.epoch.to_string(), p.offset.to_string()),
            None => (String::new(), String::new()),
        };
        let args = vec![
            candidate.to_string().into_bytes(),
            epoch.into_bytes(),
            offset.into_bytes(),
            millis(keys.max_age).into_bytes(),
            millis(keys.meta_ttl).into_bytes(),
        ];
        let Value::Array(items) = self.eval(1, stream, args).await? else {
            return Err(HistoryError::Malformed("fetch: not an array"));
        };
        let (epoch, offset) = epoch_top(&items)?;
        let top = Position { epoch, offset };
        let entries = match items.get(2).map(text) {
            None => Ok(Vec::new()),
            Some(Some("ok")) => Ok(items[3..]
                .iter()
                .map(stored)
                .collect::<Result<Vec<_>, HistoryError>>()?),
            Some(Some("epoch")) => Err(Unrecoverable::EpochChanged),
            Some(Some("ahead")) => Err(Unrecoverable::Ahead),
            Some(Some("trimmed")) => Err(Unrecoverable::Trimmed),
            Some(_) => return Err(HistoryError::Malformed("fetch: unknown status")),
        };
        Ok(Fetched { top, entries })
    }

    /// Run script `which` (0 append, 1 fetch) on `stream`'s keys, by SHA when loaded.
    async fn eval(&self, which: usize, stream: &str, args: Vec<Vec<u8>>) -> RedisResult<Value> {
        let script = [APPEND, FETCH][which];
        let keys = [self.keys.meta_key(stream), self.keys.entries_key(stream)];
        let mut conn = self.conn.clone();
        for _ in 0..2 {
            let known = self.shas.lock().unwrap_or_else(PoisonError::into_inner)[which].clone();
            let sha = match known {
                Some(sha) => sha,
                None => {
                    let sha: String = redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(script)
                        .query_async(&mut conn)
                        .await?;
                    self.shas.lock().unwrap_or_else(PoisonError::into_inner)[which] =
                        Some(sha.clone());
                    sha
                }
            };
            let result = redis::cmd("EVALSHA")
                .arg(&sha)
                .arg(2)
                .arg(&keys[..])
                .arg(&args)
                .query_async(&mut conn)
                .await;
            match result {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    self.shas.lock().unwrap_or_else(PoisonError::into_inner)[which] = None;
                }
                other => return other,
            }
        }
        Err(RedisError::from((
            ErrorKind::Server(ServerErrorKind::NoScript),
            "script not loaded after SCRIPT LOAD",
        )))
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

/// The field/value pairs an entry is stored as: `p` payload, `u` target user, `t` filter tags
/// (a JSON array of pairs), `s` publisher session.
pub fn fields(entry: &Entry) -> Vec<Vec<u8>> {
    let mut out = vec![b"p".to_vec(), entry.payload.as_bytes().to_vec()];
    if let Audience::User(user) = &entry.audience {
        out.extend([b"u".to_vec(), user.as_bytes().to_vec()]);
    }
    if let Some(tags) = &entry.tags {
        let pairs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (&**k, &**v)).collect();
        let json = serde_json::to_vec(&pairs).expect("pairs of strings serialize");
        out.extend([b"t".to_vec(), json]);
    }
    if let Some(session) = entry.publisher {
        out.extend([b"s".to_vec(), session.to_string().into_bytes()]);
    }
    out
}

/// An entry from its field/value pairs (the `ms` stamp and unknown fields are ignored).
pub fn entry(pairs: &[(&[u8], &[u8])]) -> Result<Entry, HistoryError> {
    let mut payload = None;
    let mut audience = Audience::Everyone;
    let mut tags = None;
    let mut publisher = None;
    for (k, v) in pairs {
        match *k {
            b"p" => {
                let text = Text::from_utf8(v.to_vec().into())
                    .map_err(|_| HistoryError::Malformed("entry: payload not UTF-8"))?;
                payload = Some(text);
            }
            b"u" => {
                let user = std::str::from_utf8(v)
                    .map_err(|_| HistoryError::Malformed("entry: user not UTF-8"))?;
                audience = Audience::User(user.to_string());
            }
            b"t" => {
                let pairs: Vec<(String, String)> = serde_json::from_slice(v)
                    .map_err(|_| HistoryError::Malformed("entry: tags"))?;
                tags = Some(pairs.into_iter().collect());
            }
            b"s" => {
                let id = std::str::from_utf8(v).ok().and_then(SessionId::parse);
                publisher = Some(id.ok_or(HistoryError::Malformed("entry: session"))?);
            }
            _ => {}
        }
    }
    Ok(Entry {
        payload: payload.ok_or(HistoryError::Malformed("entry: no payload"))?,
        audience,
        tags,
        publisher,
    })
}

pub use switchboard_backplane::positioned;

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn epoch_top(items: &[Value]) -> Result<(Epoch, u64), HistoryError> {
    let epoch = items
        .first()
        .and_then(text)
        .and_then(Epoch::parse)
        .ok_or(HistoryError::Malformed("no epoch"))?;
    let top = match items.get(1) {
        Some(Value::Int(n)) => u64::try_from(*n).ok(),
        Some(v) => text(v).and_then(|s| s.parse().ok()),
        None => None,
    };
    Ok((epoch, top.ok_or(HistoryError::Malformed("no top"))?))
}

/// One `XRANGE` item, `[id, [field, value, ...]]`, as (offset, entry).
fn stored(item: &Value) -> Result<(u64, Arc<Entry>), HistoryError> {
    let Value::Array(parts) = item else {
        return Err(HistoryError::Malformed("entry: not an array"));
    };
    let offset = parts
        .first()
        .and_then(text)
        .and_then(|id| id.strip_suffix("-0"))
        .and_then(|n| n.parse().ok())
        .ok_or(HistoryError::Malformed("entry: id"))?;
    let Some(Value::Array(kv)) = parts.get(1) else {
        return Err(HistoryError::Malformed("entry: fields"));
    };
    let bytes = |v: &Value| match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    };
    let owned: Vec<(Vec<u8>, Vec<u8>)> = kv
        .chunks(2)
        .map(|pair| match pair {
            [k, v] => bytes(k).zip(bytes(v)),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or(HistoryError::Malformed("entry: field pairs"))?;
    let pairs: Vec<(&[u8], &[u8])> = owned
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    Ok((offset, Arc::new(entry(&pairs)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(audience: Audience, tags: bool, publisher: bool) -> Entry {
        Entry {
            payload: Text::from(r#"{"type":"x","n":1}"#.to_string()),
            audience,
            tags: tags.then(|| {
                [("direction".to_string(), "IB".to_string())]
                    .into_iter()
                    .collect()
            }),
            publisher: publisher.then(|| SessionId::parse(&"ab".repeat(16)).unwrap()),
        }
    }

    #[test]
    fn entries_round_trip_through_their_fields() {
        for e in [
            sample(Audience::Everyone, false, false),
            sample(Audience::User("7".into()), true, true),
            sample(Audience::Everyone, true, false),
        ] {
            let f = fields(&e);
            let pairs: Vec<(&[u8], &[u8])> = f
                .chunks(2)
                .map(|c| (c[0].as_slice(), c[1].as_slice()))
                .collect();
            assert_eq!(entry(&pairs).unwrap(), e);
        }
    }

    #[test]
    fn bad_fields_are_errors_not_panics() {
        let bad: [&[(&[u8], &[u8])]; 4] = [
            &[],
            &[(b"p", b"\xff")],
            &[(b"p", b"{}"), (b"s", b"nope")],
            &[(b"p", b"{}"), (b"t", b"{")],
        ];
        for pairs in bad {
            assert!(entry(pairs).is_err(), "{pairs:?}");
        }
    }

    #[test]
    fn positioned_messages_carry_their_position() {
        let epoch = Epoch::parse("0123456789abcdef").unwrap();
        let (p, msg) = positioned(b"P0123456789abcdef:42:\x01rest:with:colons").unwrap();
        assert_eq!(p, Position { epoch, offset: 42 });
        assert_eq!(msg, b"\x01rest:with:colons");
        for bad in [
            &b"\x01plain"[..],
            b"P",
            b"Pxyz:1:",
            b"P0123456789abcdef:x:",
            b"P0123456789abcdef:1",
        ] {
            assert!(positioned(bad).is_none(), "{bad:?}");
        }
    }
}
