//! The answers of recent HTTP requests that carried an `Idempotency-Key`, so that a retried
//! publish is answered again instead of published twice. Bounded by count (oldest forgotten
//! first) and age.

use alloc::collections::VecDeque;
use alloc::string::String;
use core::time::Duration;

use hashbrown::{DefaultHashBuilder, HashMap};

use crate::http::{HttpResponse, IdempotencyKey};
use crate::Instant;

/// What a key's earlier request left.
pub(crate) enum Recall {
    /// Never seen (or forgotten): act on the request.
    New,
    /// Seen with the same request: its answer.
    Replay(HttpResponse),
    /// Seen with another request: refuse this one.
    Conflict,
}

struct Remembered {
    key: IdempotencyKey,
    response: HttpResponse,
    at: Instant,
}

pub(crate) struct Idempotency {
    ttl: Duration,
    max_keys: usize,
    answers: HashMap<String, Remembered, DefaultHashBuilder>,
    /// Keys by age, oldest first (a key appears once: it is remembered once).
    order: VecDeque<String>,
}

impl Idempotency {
    pub(crate) fn new(ttl: Duration, max_keys: usize) -> Self {
        Idempotency {
            ttl,
            max_keys,
            answers: HashMap::default(),
            order: VecDeque::new(),
        }
    }

    /// Forget what is older than the age limit.
    fn expire(&mut self, now: Instant) {
        while let Some(oldest) = self.order.front() {
            let fresh = self
                .answers
                .get(oldest)
                .is_some_and(|r| now.saturating_since(r.at) < self.ttl);
            if fresh {
                break;
            }
            let key = self.order.pop_front().expect("front exists");
            self.answers.remove(&key);
        }
    }

    pub(crate) fn recall(&mut self, now: Instant, key: &IdempotencyKey) -> Recall {
        self.expire(now);
        match self.answers.get(key.key()) {
            None => Recall::New,
            Some(r) if r.key.same_request(key) => Recall::Replay(r.response.clone()),
            Some(_) => Recall::Conflict,
        }
    }

    /// Remember `response` as the answer to `key` (a key not remembered yet: [`Self::recall`]
    /// said [`Recall::New`] in the same turn).
    pub(crate) fn remember(&mut self, now: Instant, key: IdempotencyKey, response: HttpResponse) {
        if self.max_keys == 0 {
            return;
        }
        while self.order.len() >= self.max_keys {
            let oldest = self.order.pop_front().expect("not empty");
            self.answers.remove(&oldest);
        }
        let name = String::from(key.key());
        self.order.push_back(name.clone());
        self.answers.insert(
            name,
            Remembered {
                key,
                response,
                at: now,
            },
        );
    }

    pub(crate) fn len(&self) -> usize {
        self.answers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HttpRequest, Method};
    use alloc::vec;
    use alloc::vec::Vec;

    fn key(key: &str, body: &str) -> IdempotencyKey {
        let req = HttpRequest {
            method: Method::Post,
            path: "/events/a-b".into(),
            query: Vec::new(),
            headers: vec![("idempotency-key".into(), key.into())],
            body: body.as_bytes().to_vec().into(),
        };
        IdempotencyKey::of(&req).unwrap().unwrap()
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn a_key_is_answered_again_only_for_the_same_request() {
        let mut store = Idempotency::new(Duration::from_secs(10), 100);
        assert!(matches!(store.recall(at(0), &key("k", "{}")), Recall::New));
        store.remember(at(0), key("k", "{}"), HttpResponse::empty(204));
        match store.recall(at(1), &key("k", "{}")) {
            Recall::Replay(r) => assert_eq!(r.status, 204),
            _ => panic!("the same request is replayed"),
        }
        assert!(matches!(
            store.recall(at(1), &key("k", "{ }")),
            Recall::Conflict
        ));
        assert!(matches!(store.recall(at(1), &key("j", "{}")), Recall::New));
    }

    #[test]
    fn keys_expire_and_are_bounded() {
        let mut store = Idempotency::new(Duration::from_secs(10), 3);
        for (i, k) in ["a", "b", "c", "d"].into_iter().enumerate() {
            store.remember(at(i as u64), key(k, ""), HttpResponse::empty(204));
        }
        assert_eq!(store.len(), 3);
        assert!(matches!(store.recall(at(5), &key("a", "")), Recall::New));
        assert!(matches!(
            store.recall(at(5), &key("b", "")),
            Recall::Replay(_)
        ));
        assert!(matches!(
            store.recall(at(10_002), &key("b", "")),
            Recall::New
        ));
        assert!(matches!(
            store.recall(at(10_002), &key("d", "")),
            Recall::Replay(_)
        ));
        assert!(matches!(
            store.recall(at(10_003), &key("d", "")),
            Recall::New
        ));
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in ["", " ", "a b", "é", &"x".repeat(129), "tab\t"] {
            assert!(IdempotencyKey::check_header(bad).is_err(), "{bad:?}");
        }
        for good in ["k", "4f1c-22", &"x".repeat(128), "\"quoted\""] {
            assert!(IdempotencyKey::check_header(good).is_ok(), "{good:?}");
        }
    }
}
