//! The engine side of a node: [`Core`] owns the [`Engine`], the [`Endpoint`], each group's
//! submit-ring consumer and (inside the endpoint's [`NodeSink`]) its delivery-ring producer,
//! and the audit log; [`Core::poll`] is one duty cycle. Everything here runs on the one thread
//! that drives the node.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::audit::AuditLog;
use crate::engine::{Engine, EngineError, IdleStrategy};
use crate::node::handle::{
    decode_submit, write_delivery_header, GroupHandle, GroupShared, HandleParts, NodeShared, Op,
    DELIVERY_HEADER,
};
use crate::node::{GroupConfig, NodeConfig, NodeError, NodeGroupStats, NodeStats};
use crate::protocol::{Delivery, DeliveryKind, DeliverySink, Endpoint, GroupSpec, SendError};
use crate::ring::{self, Consumer, Producer, RingError};
use crate::wire::DropReason;
use crate::{GroupId, MemberId, ViewId};

/// Most submit records taken from one group's ring per duty cycle, so receiving and
/// delivering keep their share of the thread under a send flood.
const DRAIN_BATCH: usize = 1024;
/// How often buffered audit lines are flushed.
const AUDIT_FLUSH: Duration = Duration::from_millis(100);

/// One group's delivery side, inside the endpoint's sink.
struct SinkGroup {
    id: GroupId,
    ring: Producer,
    shared: Arc<GroupShared>,
    delivered: u64,
    refusals: u64,
    discarded: u64,
    /// A reliable delivery was refused since the last `settle_blocked`.
    refused: bool,
}

/// The endpoint's [`DeliverySink`]: writes each delivery straight into its group's delivery
/// ring (the only copy between the datagram / reassembly buffer and the application) and logs
/// it to the audit log.
pub(super) struct NodeSink {
    groups: Vec<SinkGroup>,
    /// Index of the group of the last delivery (deliveries come in runs per group).
    last: usize,
    audit: Option<AuditLog>,
}

impl NodeSink {
    fn find(&mut self, group: GroupId) -> Option<usize> {
        if self.groups.get(self.last).is_some_and(|g| g.id == group) {
            return Some(self.last);
        }
        let i = self.groups.iter().position(|g| g.id == group)?;
        self.last = i;
        Some(i)
    }
}

impl DeliverySink for NodeSink {
    fn deliver(&mut self, d: &Delivery<'_>) -> bool {
        let Some(gi) = self.find(d.group) else {
            // The group was left: nobody to deliver to.
            return true;
        };
        let g = &mut self.groups[gi];
        match g.ring.try_claim(DELIVERY_HEADER + d.payload.len()) {
            Ok(mut claim) => {
                write_delivery_header(
                    &mut claim[..DELIVERY_HEADER],
                    d.sender,
                    d.seq,
                    d.view,
                    d.kind,
                );
                claim[DELIVERY_HEADER..].copy_from_slice(d.payload);
                claim.commit();
                g.delivered += 1;
                if let Some(audit) = &mut self.audit {
                    audit.record(d);
                }
                true
            }
            Err(RingError::WouldBlock) => {
                g.refusals += 1;
                // Only reliable kinds are kept and retried by the endpoint; a refused raw
                // message is dropped (and counted as raw_overflow), so nothing waits for room.
                // The flag stays set until a full retry pass refuses nothing (`settle_blocked`),
                // so it is set whenever a message waits for room: in particular before the
                // engine's pre-park fence.
                if matches!(d.kind, DeliveryKind::Send | DeliveryKind::P2p) {
                    g.refused = true;
                    g.shared.delivery_blocked.store(true, Ordering::Relaxed);
                }
                false
            }
            // The application dropped its handle; or (impossible: rings are sized for the
            // largest message) the record is too large. Either way nobody can take it.
            Err(RingError::Closed) | Err(RingError::TooLarge { .. }) => {
                g.discarded += 1;
                true
            }
        }
    }
}

/// One group's submit side and bookkeeping.
struct GroupSlot {
    id: GroupId,
    view: ViewId,
    multicast: Option<SocketAddrV4>,
    ring_bytes: usize,
    submit: Consumer,
    /// The last drain stopped because the endpoint said WouldBlock.
    submit_blocked: bool,
    submitted: u64,
    submit_would_block: u64,
    submit_rejected: u64,
}

/// The engine-thread state of one node. `!Send` (it owns the [`Engine`]).
pub(super) struct Core {
    engine: Engine,
    endpoint: Endpoint<NodeSink>,
    groups: Vec<GroupSlot>,
    shared: Arc<NodeShared>,
    me: MemberId,
    ring_bytes: usize,
    max_message: usize,
    max_raw: usize,
    ack_interval: Duration,
    heartbeat_interval: Duration,
    /// The last cycle moved records between rings and endpoint: do not park before the next.
    busy: bool,
    /// The engine parks when idle (`IdleStrategy::Park`): only then is the sleeping flag and
    /// its wake-up protocol used (spinning engines never need waking).
    parks: bool,
    last_audit_flush: Instant,
    audit_error: Option<String>,
}

impl Core {
    /// Opens the engine (on the calling thread, which must be the one that drives it) and the
    /// audit log, and builds the endpoint. `cfg` must be validated.
    pub(super) fn new(cfg: &NodeConfig) -> Result<Core, NodeError> {
        let engine = Engine::new(cfg.engine.clone()).map_err(NodeError::Engine)?;
        let audit = match &cfg.audit_log {
            None => None,
            Some(path) => Some(
                AuditLog::create(path, cfg.me).map_err(|source| NodeError::Io {
                    context: format!("creating audit log {}", path.display()),
                    source,
                })?,
            ),
        };
        let initial_packet_number = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let sink = NodeSink {
            groups: Vec::new(),
            last: 0,
            audit,
        };
        let mut endpoint = Endpoint::new(
            cfg.protocol.clone(),
            cfg.me,
            initial_packet_number,
            cfg.seed,
            sink,
        );
        if let Some(key) = &cfg.system_key {
            endpoint.set_system_key(Some(key));
        }
        let mut engine = engine;
        engine.address_book().set_local(cfg.me);
        let shared = Arc::new(NodeShared {
            sleeping: AtomicBool::new(false),
            waker: engine.waker(),
        });
        Ok(Core {
            engine,
            endpoint,
            groups: Vec::new(),
            shared,
            me: cfg.me,
            ring_bytes: cfg.effective_ring_bytes(),
            max_message: cfg.protocol.max_message_bytes,
            max_raw: cfg.protocol.max_frame_payload(),
            ack_interval: cfg.protocol.ack_interval,
            heartbeat_interval: cfg.protocol.heartbeat_interval,
            busy: false,
            parks: cfg.engine.idle == IdleStrategy::Park,
            last_audit_flush: Instant::now(),
            audit_error: None,
        })
    }

    pub(super) fn shared(&self) -> &Arc<NodeShared> {
        &self.shared
    }

    pub(super) fn local_addr(&self) -> SocketAddrV4 {
        self.engine.local_addr()
    }

    /// Joins a group: validates the configuration, creates its two rings, joins its multicast
    /// address (if any), routes it in the address book and joins it in the endpoint.
    pub(super) fn join(&mut self, cfg: GroupConfig) -> Result<GroupHandle, NodeError> {
        let group = cfg.group;
        if self.groups.iter().any(|g| g.id == group) {
            return Err(NodeError::AlreadyJoined(group));
        }
        let bad = |msg: String| NodeError::Config(format!("group {group}: {msg}"));
        let mut ids: Vec<MemberId> = cfg.members.iter().map(|(m, _)| *m).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(bad("GroupConfig.members lists a member twice".into()));
        }
        if !ids.contains(&self.me) {
            return Err(bad(format!(
                "GroupConfig.members must include this node ({})",
                self.me
            )));
        }
        for (m, addr) in &cfg.members {
            if !matches!(addr, SocketAddr::V4(_)) {
                return Err(bad(format!(
                    "member {m} has address {addr}: only IPv4 is supported"
                )));
            }
        }
        if let Some(addr) = cfg.multicast {
            if !addr.ip().is_multicast() {
                return Err(bad(format!(
                    "GroupConfig.multicast={addr}: expected an IPv4 multicast address"
                )));
            }
        }
        if let Some(limit) = &cfg.rate_limit {
            limit
                .validate()
                .map_err(|e| bad(format!("GroupConfig.rate_limit: {e}")))?;
        }
        let ring = |what| {
            ring::channel(self.ring_bytes).map_err(|e| {
                NodeError::Config(format!("{what} ring of {} bytes: {e}", self.ring_bytes))
            })
        };
        let (submit_tx, submit_rx) = ring("submit")?;
        let (deliver_tx, deliver_rx) = ring("delivery")?;
        if let Some(addr) = cfg.multicast {
            self.engine
                .join_multicast(addr)
                .map_err(|source| NodeError::Io {
                    context: format!("joining multicast group {addr} for group {group}"),
                    source,
                })?;
        }
        let book = self.engine.address_book();
        for (m, addr) in &cfg.members {
            book.set_member(*m, *addr);
        }
        match cfg.multicast {
            Some(addr) => book.set_group_multicast(group, addr),
            None => book.set_group_unicast(group, ids.clone()),
        }
        self.endpoint.join(
            group,
            GroupSpec {
                view: cfg.view,
                members: ids.clone(),
                multicast: cfg.multicast.is_some(),
                key: cfg.key,
            },
        );
        if cfg.rate_limit.is_some() {
            let now = self.engine.clock().now();
            if let Err(e) = self.endpoint.set_rate_limit(now, group, cfg.rate_limit) {
                self.endpoint.leave(group);
                self.engine.address_book().remove_group(group);
                return Err(bad(e));
            }
        }
        let shared = Arc::new(GroupShared::default());
        self.endpoint.sink_mut().groups.push(SinkGroup {
            id: group,
            ring: deliver_tx,
            shared: Arc::clone(&shared),
            delivered: 0,
            refusals: 0,
            discarded: 0,
            refused: false,
        });
        self.groups.push(GroupSlot {
            id: group,
            view: cfg.view,
            multicast: cfg.multicast,
            ring_bytes: submit_rx.capacity(),
            submit: submit_rx,
            submit_blocked: false,
            submitted: 0,
            submit_would_block: 0,
            submit_rejected: 0,
        });
        Ok(GroupHandle::new(HandleParts {
            group,
            view: cfg.view,
            me: self.me,
            members: ids,
            max_message: self.max_message,
            max_raw: self.max_raw,
            submit: submit_tx,
            deliveries: deliver_rx,
            node: Arc::clone(&self.shared),
            shared,
        }))
    }

    /// Leaves a group: drops its protocol state and its rings (its handle reports `Closed`),
    /// and its multicast membership unless another group uses the same address.
    pub(super) fn leave(&mut self, group: GroupId) -> Result<(), NodeError> {
        let i = self
            .groups
            .iter()
            .position(|g| g.id == group)
            .ok_or(NodeError::UnknownGroup(group))?;
        let slot = self.groups.remove(i);
        self.endpoint.leave(group);
        let sink = self.endpoint.sink_mut();
        sink.groups.retain(|g| g.id != group);
        sink.last = 0;
        self.engine.address_book().remove_group(group);
        if let Some(addr) = slot.multicast {
            if !self.groups.iter().any(|g| g.multicast == Some(addr)) {
                self.engine
                    .leave_multicast(addr)
                    .map_err(|source| NodeError::Io {
                        context: format!("leaving multicast group {addr}"),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Whether the engine may park: nothing it could do right now. Called with `sleeping`
    /// set, after a fence, so that a concurrent application update is seen here or sees the
    /// flag. Retrying refused deliveries counts as work if it delivers anything.
    fn idle(&mut self) -> bool {
        if self.endpoint.poll_delivery() > 0 {
            return false;
        }
        !self
            .groups
            .iter()
            .any(|g| !g.submit_blocked && g.submit.pending_hint() > 0)
    }

    /// One duty cycle: `engine.poll` (receive → timers → transmit; parks up to `max_wait` when
    /// idle and nothing is pending in the rings), then drain every submit ring into the
    /// endpoint until it says WouldBlock, then retry refused deliveries, then flush the audit
    /// log if due. `commands_pending` is consulted before parking. Returns the work done
    /// (datagrams + submissions + deliveries; 0 = idle).
    pub(super) fn poll(
        &mut self,
        max_wait: Duration,
        commands_pending: &dyn Fn() -> bool,
    ) -> Result<usize, NodeError> {
        let mut wait = Duration::ZERO;
        if self.parks && !self.busy && !max_wait.is_zero() {
            self.shared.sleeping.store(true, Ordering::Relaxed);
            // Pairs with the fences in the handles' notify paths (Dekker): an application
            // update that our checks below miss will see `sleeping` and wake us.
            fence(Ordering::SeqCst);
            if self.idle() && !commands_pending() {
                wait = max_wait;
            } else {
                self.shared.sleeping.store(false, Ordering::Relaxed);
            }
        }
        let io = self.engine.poll(&mut self.endpoint, wait);
        self.shared.sleeping.store(false, Ordering::Relaxed);
        let io = io.map_err(NodeError::Engine)?;
        let submitted = self.drain_submissions();
        let delivered = self.retry_deliveries();
        self.busy = submitted + delivered > 0;
        self.maybe_flush_audit();
        Ok(io + submitted + delivered)
    }

    /// `Endpoint::poll_delivery` (retries every refused delivery and self-delivery), then
    /// clears the "waiting for room" flag of every group that had no refusal in that pass:
    /// nothing of theirs is waiting any more.
    fn retry_deliveries(&mut self) -> usize {
        for g in self.endpoint.sink_mut().groups.iter_mut() {
            g.refused = false;
        }
        let delivered = self.endpoint.poll_delivery();
        for g in self.endpoint.sink_mut().groups.iter_mut() {
            if !g.refused && g.shared.delivery_blocked.load(Ordering::Relaxed) {
                g.shared.delivery_blocked.store(false, Ordering::Relaxed);
            }
        }
        delivered
    }

    /// Moves submit records into the endpoint, stopping a group's ring at WouldBlock (the
    /// record stays in the ring: the ring itself is the backpressure).
    fn drain_submissions(&mut self) -> usize {
        let now = self.engine.clock().now();
        let mut total = 0;
        for g in self.groups.iter_mut() {
            g.submit_blocked = false;
            for _ in 0..DRAIN_BATCH {
                let Some(rec) = g.submit.try_read() else {
                    break;
                };
                let result = match decode_submit(&rec) {
                    None => Err(SendError::UnknownGroup(g.id)),
                    Some((op, to, payload)) => match op {
                        Op::Send => self.endpoint.try_send(now, g.id, payload),
                        Op::P2p => self.endpoint.try_send_p2p(now, g.id, to, payload),
                        Op::Raw => self.endpoint.try_send_raw(now, g.id, None, payload),
                        Op::RawP2p => self.endpoint.try_send_raw(now, g.id, Some(to), payload),
                    },
                };
                match result {
                    Ok(_) => {
                        g.submitted += 1;
                        total += 1;
                    }
                    // A wedged group (view change in progress) is backpressure too.
                    Err(SendError::WouldBlock) | Err(SendError::Wedged(_)) => {
                        rec.unread();
                        g.submit_blocked = true;
                        g.submit_would_block += 1;
                        break;
                    }
                    // The handle checks sizes and destinations, so this is unreachable in
                    // practice; the record is released and counted.
                    Err(_) => g.submit_rejected += 1,
                }
            }
        }
        total
    }

    fn maybe_flush_audit(&mut self) {
        if self.endpoint.sink().audit.is_some() && self.last_audit_flush.elapsed() >= AUDIT_FLUSH {
            self.flush_audit();
        }
    }

    pub(super) fn flush_audit(&mut self) {
        self.last_audit_flush = Instant::now();
        if let Some(audit) = &mut self.endpoint.sink_mut().audit {
            audit.flush();
            if let Some(e) = audit.error() {
                self.audit_error = Some(e.to_string());
            }
        }
    }

    /// True when everything the application submitted was sent and every peer holds it.
    fn quiescent(&self) -> bool {
        self.groups.iter().all(|g| {
            g.submit.pending_hint() == 0
                && self.endpoint.all_stable(g.id)
                && self
                    .endpoint
                    .group_stats(g.id)
                    .is_none_or(|s| s.p2p_retained_bytes == 0 && s.raw_queued == 0)
        })
    }

    /// Runs duty cycles until everything submitted is sent and stable at every peer, or
    /// `limit` passed. Returns whether it got there.
    ///
    /// Once stable it lingers until no datagram arrived for two heartbeat intervals plus an
    /// ack interval: peers still waiting for this member's receipt reports heartbeat at it,
    /// and stopping earlier would leave their final messages unacknowledged (they would then
    /// wait out their own flush limit).
    pub(super) fn flush(&mut self, limit: Duration) -> Result<bool, NodeError> {
        let deadline = Instant::now() + limit;
        let quiet = 2 * self.heartbeat_interval + self.ack_interval + Duration::from_millis(5);
        let mut last_rx = self.engine.stats().datagrams_received;
        let mut quiet_since = Instant::now();
        loop {
            let now = Instant::now();
            let quiescent = self.quiescent();
            let rx = self.engine.stats().datagrams_received;
            if !quiescent || rx != last_rx {
                last_rx = rx;
                quiet_since = now;
            } else if now.duration_since(quiet_since) >= quiet {
                return Ok(true);
            }
            if now >= deadline {
                return Ok(quiescent);
            }
            self.poll(Duration::from_millis(1), &|| false)?;
        }
    }

    /// A snapshot of every counter.
    pub(super) fn stats(&self) -> NodeStats {
        let sink = self.endpoint.sink();
        let groups = self
            .groups
            .iter()
            .map(|g| {
                let s = sink.groups.iter().find(|s| s.id == g.id);
                NodeGroupStats {
                    group: g.id,
                    view: g.view,
                    protocol: self.endpoint.group_stats(g.id),
                    all_stable: self.endpoint.all_stable(g.id),
                    ring_bytes: g.ring_bytes,
                    submit_pending_bytes: g.submit.pending_hint(),
                    delivery_pending_bytes: s
                        .map_or(0, |s| s.ring.capacity() - s.ring.free_bytes()),
                    submitted: g.submitted,
                    submit_would_block: g.submit_would_block,
                    submit_rejected: g.submit_rejected,
                    delivered: s.map_or(0, |s| s.delivered),
                    delivery_refusals: s.map_or(0, |s| s.refusals),
                    discarded: s.map_or(0, |s| s.discarded),
                }
            })
            .collect();
        let drops = self.endpoint.drops();
        let audit = sink.audit.as_ref();
        NodeStats {
            me: self.me,
            local_addr: self.engine.local_addr(),
            backend: self.engine.backend_kind(),
            endpoint: self.endpoint.stats().clone(),
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.name(), drops.get(*r)))
                .collect(),
            engine: self.engine.stats().clone(),
            groups,
            audit_lines: audit.map_or(0, |a| a.lines()),
            audit_error: audit
                .and_then(|a| a.error().map(str::to_string))
                .or_else(|| self.audit_error.clone()),
            flushed: self.quiescent(),
        }
    }
}

impl From<EngineError> for NodeError {
    fn from(e: EngineError) -> Self {
        NodeError::Engine(e)
    }
}
