//! Order per stream with a shared history ([`crate::HistoryConfig::shared`]).
//!
//! On a cluster, every kept publication, this node's own included, comes back from the shared
//! history's channel with its position ([`crate::Hub::handle_positioned`]). The channel carries
//! a stream's publications in offset order, but a node can miss some (its subscription to the
//! channel was re-established, its inbound queue was full). So each stream's [`Order`] knows the
//! offset it delivers next: a publication above it is held and the hole is fetched from the
//! history; what the fetch returns is delivered in order, then what was held. A hole the history
//! no longer has is reported to the stream's v2 subscribers as a `gap`; a fetch the history could
//! not answer is asked again (at the next publication, or the driver's check). Nothing is delivered
//! twice and nothing out of order, and a v2 client never sees a hole silently.

use alloc::string::ToString;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::history::{Entry, FetchId, Fetched, HistoryError, Position};
use crate::output::Output;
use crate::state::Core;
use crate::streams::{Fetcher, Order, MAX_HELD};

impl Core {
    /// A kept publication of `stream` at `position` came from the shared history.
    pub(crate) fn v2_sequenced(&mut self, stream: &str, position: Position, entry: Arc<Entry>) {
        let Some(streams) = self.streams.as_deref_mut() else {
            return;
        };
        if streams.system != Some(stream) && !self.rooms.contains_key(stream) {
            return; // No local member (the channel's subscription is on its way out).
        }
        let order = streams
            .order
            .entry_ref(stream)
            .or_insert_with(|| Order::at(position.epoch, position.offset));
        if order.epoch != position.epoch {
            // The history was started afresh: what was held belongs to the old one, and all of
            // the new one matters (what came before this publication is fetched).
            *order = Order::at(position.epoch, 1);
        }
        if position.offset < order.next {
            return; // Delivered already (from a fetch of a hole).
        }
        if position.offset > order.next || order.fetch.is_some() {
            order.held.insert(position.offset, entry);
            if order.fetch.is_none() {
                let since = Position {
                    epoch: order.epoch,
                    offset: order.next - 1,
                };
                let id = streams.fetch_for(Fetcher::Stream, stream);
                let order = streams.order.get_mut(stream).expect("inserted above");
                order.fetch = Some(id);
                self.counters.holes += 1;
                self.outputs.push_back(Output::Fetch {
                    id,
                    stream: stream.to_string(),
                    since: Some(since),
                });
            } else if order.held.len() > MAX_HELD {
                // The hole is taking too long to fill: give it up as a gap and go on.
                order.fetch = None;
                self.v2_release(stream);
            }
            return;
        }
        order.next += 1;
        self.v2_fan_out(stream, Some(position), &entry);
        self.v2_release(stream);
    }

    /// The fetch of a hole in `stream` came back: deliver what it holds in order, report what
    /// it cannot give as a gap, then deliver what was held above the hole.
    pub(crate) fn v2_hole_fetched(
        &mut self,
        id: FetchId,
        stream: &str,
        result: Result<Fetched, HistoryError>,
    ) {
        let Some(order) = self.order_mut(stream).filter(|o| o.fetch == Some(id)) else {
            return; // The stream was left, restarted, or given up meanwhile.
        };
        order.fetch = None;
        let epoch = order.epoch;
        let entries = match result {
            Ok(Fetched {
                top,
                entries: Ok(entries),
            }) if top.epoch == epoch => entries,
            Ok(_) => Vec::new(),
            // The history could not be asked (its connection is down): what is held waits for
            // the next publication, or the driver's check once the connection is back, to ask
            // again (bounded by `MAX_HELD`).
            Err(_) => return,
        };
        for (offset, entry) in entries {
            let Some(order) = self.order_mut(stream) else {
                return;
            };
            if offset < order.next {
                continue;
            }
            if offset > order.next {
                break; // Not contiguous: the rest is a gap.
            }
            order.next += 1;
            order.held.remove(&offset);
            self.v2_fan_out(stream, Some(Position { epoch, offset }), &entry);
        }
        self.v2_release(stream);
    }

    /// Deliver what is held above `stream`'s next offset, in order. A hole below the first held
    /// publication, with no fetch in flight for it, is given up: its subscribers are told.
    fn v2_release(&mut self, stream: &str) {
        loop {
            let Some(order) = self.order_mut(stream) else {
                return;
            };
            if order.fetch.is_some() {
                return;
            }
            let Some(first) = order.held.first_entry() else {
                return;
            };
            let offset = *first.key();
            let epoch = order.epoch;
            if offset > order.next {
                let (from, to) = (order.next, offset - 1);
                order.next = offset;
                self.v2_missed(
                    stream,
                    Position {
                        epoch,
                        offset: from,
                    },
                    to,
                );
                continue;
            }
            let entry = first.remove();
            order.next = offset + 1;
            self.v2_fan_out(stream, Some(Position { epoch, offset }), &entry);
        }
    }

    /// Offsets `from..=to` of `stream` cannot be delivered: a `gap` for each v2 subscriber that
    /// has not been given them.
    fn v2_missed(&mut self, stream: &str, from: Position, to: u64) {
        self.counters.holes_lost += to - from.offset + 1;
        let mut slots = core::mem::take(&mut self.scratch);
        slots.clear();
        if let Some(streams) = self.streams.as_deref() {
            if streams.system == Some(stream) {
                slots.extend(streams.members.iter());
            } else {
                slots.extend(self.rooms.get(stream).iter().flat_map(|r| r.members.iter()));
            }
        }
        for &slot in &slots {
            self.v2_skip_range(slot, stream, from, to);
        }
        self.scratch = slots;
    }

    /// The history's channel may have lost publications of every stream this node follows
    /// (its subscription was re-established): fetch each stream from where it is, so that
    /// even the last publications before a quiet spell arrive.
    pub(crate) fn v2_check_streams(&mut self) {
        let Some(streams) = self.streams.as_deref_mut() else {
            return;
        };
        let names: Vec<_> = streams
            .order
            .iter()
            .filter(|(_, o)| o.fetch.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        for stream in names {
            let id = streams.fetch_for(Fetcher::Stream, &stream);
            let order = streams.order.get_mut(&stream).expect("listed above");
            order.fetch = Some(id);
            let since = Position {
                epoch: order.epoch,
                offset: order.next - 1,
            };
            self.outputs.push_back(Output::Fetch {
                id,
                stream,
                since: Some(since),
            });
        }
    }

    fn order_mut(&mut self, stream: &str) -> Option<&mut Order> {
        self.streams.as_deref_mut()?.order.get_mut(stream)
    }

    /// This node no longer receives `stream` (its room's last local member left).
    pub(crate) fn v2_forget_order(&mut self, stream: &str) {
        if let Some(streams) = self.streams.as_deref_mut() {
            streams.order.remove(stream);
        }
    }
}
