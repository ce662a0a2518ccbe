//! One system's backplane over several Redis instances: a [`Backplane`] machine per instance,
//! and the routing between them (sans-IO, like each of them).
//!
//! Each instance carries the streams [`Instances::of`] gives it: a room's channel, its history
//! keys and its `Members` messages on the room's instance; the `all` channel (publications to
//! everyone and to users) and the system's own stream on the instance of the system's name. So
//! each instance's machine sees exactly what one Redis saw before, for its streams, and the
//! ordering and gap reasoning holds per instance. Losing one instance is that machine's Redis
//! being down: its streams' appends and fetches are answered unavailable (clients resuming on
//! them are told they did not recover), its publications dropped and counted; the others go on.
//!
//! Node-wide state survives the loss of any one instance: every machine writes this node's
//! lease to its own instance (all of them, every [`crate::LEASE_EVERY`]) and reads the live
//! nodes there; the hub is handed the **union** of the views read within [`crate::LEASE`] from
//! the instances whose publishing connection is up. A node is gone from the union only when no
//! reachable instance lists it any more.
//!
//! With one instance this is exactly the single machine: same commands, same order.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use switchboard_hub::cluster::{Members, NodeSummary, MAX_NODES};
use switchboard_hub::history::{Entry, Epoch, FetchId, Position};
use switchboard_hub::{Instant, Publication, Target};

use crate::machine::{Backplane, Command, Config, Sent, Side, ToHub, LEASE};
use crate::shard::Instances;
use crate::status::Status;

/// The live nodes one instance listed, and until when that view counts.
type View = (Instant, Vec<(u64, NodeSummary)>);

/// A backplane machine per Redis instance, and the routing between them. Commands come out
/// tagged with the instance they are for; inputs about a connection name their instance.
#[derive(Debug)]
pub struct Sharded {
    system: &'static str,
    instances: Instances,
    machines: Vec<Backplane>,
    /// Each instance's last view of the live nodes, while it counts.
    views: Vec<Option<View>>,
    /// The other live nodes in the union last handed to the hub.
    nodes: u64,
    /// The latest time a caller gave.
    now: Instant,
    commands: VecDeque<(usize, Command)>,
}

impl Sharded {
    /// One machine per instance of `instances`, configured like `config` (each with its own
    /// jitter seed), every connection down with a first attempt due at `now`.
    pub fn new(config: Config, instances: Instances, now: Instant) -> Self {
        let machines = (0..instances.len())
            .map(|i| {
                let mut c = config.clone();
                if i > 0 {
                    c.seed = c.seed.rotate_left(i as u32 * 7) ^ i as u64;
                }
                Backplane::new(c, now)
            })
            .collect();
        Sharded {
            system: config.system,
            views: vec![None; instances.len()],
            instances,
            machines,
            nodes: 0,
            now,
            commands: VecDeque::new(),
        }
    }

    /// The instances and the routing.
    pub fn instances(&self) -> &Instances {
        &self.instances
    }

    /// The instance carrying `stream` (a room, or the system's stream).
    pub fn instance_of(&self, stream: &str) -> usize {
        self.instances.of(stream)
    }

    /// The instance carrying a publication to `target` (`None`: one connection's, never
    /// replicated).
    fn instance_of_target(&self, target: &Target) -> Option<usize> {
        match target {
            Target::Room(room) => Some(self.instances.of(room)),
            Target::All | Target::User(_) => Some(self.instances.of(self.system)),
            _ => None,
        }
    }

    /// Move what machine `i` asks into the tagged queue; a live-nodes view becomes the union.
    fn collect(&mut self, i: usize) {
        while let Some(command) = self.machines[i].poll_command() {
            let command = match command {
                Command::Deliver(ToHub::Cluster(nodes)) if self.machines.len() > 1 => {
                    self.views[i] = Some((self.now + LEASE, nodes));
                    Command::Deliver(ToHub::Cluster(self.union()))
                }
                other => other,
            };
            self.commands.push_back((i, command));
        }
    }

    /// Every node listed by a view that still counts, each once (the freshest view's summary),
    /// at most [`MAX_NODES`].
    fn union(&mut self) -> Vec<(u64, NodeSummary)> {
        let now = self.now;
        let mut fresh: Vec<&View> = self
            .views
            .iter()
            .flatten()
            .filter(|(until, _)| *until > now)
            .collect();
        fresh.sort_by_key(|v| std::cmp::Reverse(v.0));
        let mut out: Vec<(u64, NodeSummary)> = Vec::new();
        for (_, nodes) in fresh {
            for (id, summary) in nodes {
                if out.len() < MAX_NODES && !out.iter().any(|(n, _)| n == id) {
                    out.push((*id, summary.clone()));
                }
            }
        }
        self.nodes = out.len() as u64;
        out
    }

    /// The next command, with the instance it is for.
    pub fn poll_command(&mut self) -> Option<(usize, Command)> {
        self.commands.pop_front()
    }

    /// When [`Sharded::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.machines
            .iter()
            .filter_map(Backplane::poll_timeout)
            .min()
    }

    /// Reconnects that are due, keepalives, leases and reconciliation, on every instance.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        for i in 0..self.machines.len() {
            self.machines[i].handle_timeout(now);
            self.collect(i);
        }
    }

    /// Whether it takes more from the hub now: only while every instance does (one instance
    /// slow to answer holds the others back until its connection times out).
    pub fn wants_input(&self) -> bool {
        self.machines.iter().all(Backplane::wants_input)
    }

    /// Whether nothing taken from the hub is still waiting for any instance.
    pub fn is_flushed(&self) -> bool {
        self.machines.iter().all(Backplane::is_flushed)
    }

    /// Every instance's counters summed (`connected`: every instance up), with each instance's
    /// own in [`Status::instances`] when there are several.
    pub fn status(&self) -> Status {
        if self.machines.len() == 1 {
            return self.machines[0].status();
        }
        let each: Vec<Status> = self.machines.iter().map(Backplane::status).collect();
        let mut total = each[0].clone();
        for s in &each[1..] {
            total.publisher_connected &= s.publisher_connected;
            total.subscriber_connected &= s.subscriber_connected;
            total.published += s.published;
            total.received += s.received;
            total.dropped_while_down += s.dropped_while_down;
            total.dropped_inbound += s.dropped_inbound;
            total.missed += s.missed;
            total.invalid += s.invalid;
            total.reconnects += s.reconnects;
            total.errors += s.errors;
            total.room_subscriptions += s.room_subscriptions;
        }
        total.connected = each.iter().all(|s| s.connected);
        // The last error of an instance that is down, else of any.
        total.last_error = each
            .iter()
            .filter(|s| !s.connected)
            .chain(each.iter())
            .find_map(|s| s.last_error.clone());
        total.nodes = self.nodes;
        total.instances = each
            .into_iter()
            .zip(self.instances.names())
            .map(|(mut s, name)| {
                s.address = Some(name.clone());
                s
            })
            .collect();
        total
    }

    /// A connection attempt of instance `i` succeeded.
    pub fn handle_connected(&mut self, now: Instant, i: usize, side: Side) {
        self.now = now;
        self.machines[i].handle_connected(now, side);
        self.collect(i);
    }

    /// A connection of instance `i` failed (to open, or while up); its view of the live nodes
    /// stops counting with its publishing connection.
    pub fn handle_failed(&mut self, now: Instant, i: usize, side: Side, error: &str) {
        self.now = now;
        if side == Side::Publisher {
            self.views[i] = None;
        }
        self.machines[i].handle_failed(now, side, error);
        self.collect(i);
    }

    /// A local publication, to the instance of its room (or of the `all` channel).
    pub fn handle_publish(&mut self, publication: &Publication) {
        if let Some(i) = self.instance_of_target(&publication.target) {
            self.machines[i].handle_publish(publication);
            self.collect(i);
        }
    }

    /// This node's summary, as the hub gave it when instance `i` asked.
    pub fn handle_summary(&mut self, i: usize, summary: &NodeSummary) {
        self.machines[i].handle_summary(summary);
        self.collect(i);
    }

    /// This node's members of `room` changed: on the room's instance.
    pub fn handle_members(&mut self, room: &str, members: &Members, hello: bool) {
        let i = self.instances.of(room);
        self.machines[i].handle_members(room, members, hello);
        self.collect(i);
    }

    /// A kept publication of `stream`: appended on the stream's instance.
    pub fn handle_append(
        &mut self,
        stream: String,
        entry: Arc<Entry>,
        target: Target,
        epoch: Epoch,
    ) {
        let i = self.instances.of(&stream);
        self.machines[i].handle_append(stream, entry, target, epoch);
        self.collect(i);
    }

    /// A fetch of `stream`, from the stream's instance.
    pub fn handle_fetch(
        &mut self,
        id: FetchId,
        stream: String,
        since: Option<Position>,
        epoch: Epoch,
    ) {
        let i = self.instances.of(&stream);
        self.machines[i].handle_fetch(id, stream, since, epoch);
        self.collect(i);
    }

    /// A room got its first local member (`true`) or lost its last: on the room's instance.
    pub fn handle_room(&mut self, room: String, opened: bool) {
        let i = self.instances.of(&room);
        self.machines[i].handle_room(room, opened);
        self.collect(i);
    }

    /// The hub's rooms, for reconciliation: each instance gets its own (instance `i` asked, but
    /// the list is the same for all of them).
    pub fn handle_rooms(&mut self, rooms: Vec<String>) {
        if self.machines.len() == 1 {
            self.machines[0].handle_rooms(rooms);
            self.collect(0);
            return;
        }
        let mut split: Vec<Vec<String>> = vec![Vec::new(); self.machines.len()];
        for room in rooms {
            split[self.instances.of(&room)].push(room);
        }
        for (i, rooms) in split.into_iter().enumerate() {
            self.machines[i].handle_rooms(rooms);
            self.collect(i);
        }
    }

    /// A subscription change of instance `i` went through (or failed).
    pub fn handle_subscribed(&mut self, now: Instant, i: usize, result: Result<(), String>) {
        self.now = now;
        self.machines[i].handle_subscribed(now, result);
        self.collect(i);
    }

    /// A message arrived on instance `i`'s subscription.
    pub fn handle_message(&mut self, i: usize, payload: Bytes) {
        self.machines[i].handle_message(payload);
        self.collect(i);
    }

    /// The hub's queue could not take a delivery instance `i` asked for.
    pub fn handle_hub_full(&mut self, i: usize, dropped: &ToHub) {
        self.machines[i].handle_hub_full(dropped);
        self.collect(i);
    }

    /// Instance `i`'s batch in flight was answered.
    pub fn handle_sent(&mut self, now: Instant, i: usize, sent: Sent) {
        self.now = now;
        self.machines[i].handle_sent(now, sent);
        self.collect(i);
    }
}
