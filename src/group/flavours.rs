//! The [`Group`] calls of the multicast and query flavours beyond Send / OrderedSend /
//! P2PSend (the manual's "Flavors of Query and Multicast" and "Peer to Peer Communication"):
//! `causal_send`, `raw_send`, `raw_p2p_send`, `causal_query`, `raw_query`, `p2p_query` and
//! `raw_p2p_query`. Their delivery machinery is in the driver (`system::flavours`).

use super::*;

use crate::system::flavours::{FlavCmd, Via};

impl Group {
    /// Isis² `CausalSend`: a multicast delivered in causal order. If this member delivered X
    /// (from anyone, by CausalSend) or sent X before sending Y, every member delivers X
    /// before Y; concurrent messages may be delivered in different orders at different
    /// members. Otherwise like [`Group::send`] (reliable, delivered to the sender too, in
    /// the view it is sent in). Inside a handler, [`Group::message_kind`] is
    /// [`MsgKind::Causal`]. Messages held back for a predecessor that died with its sender
    /// are delivered at the next view change, before the view callback.
    ///
    /// ```no_run
    /// use vsync::{Group, System};
    /// const LOCK: u32 = 0;
    /// let sys = System::start()?;
    /// let g = Group::new(&sys, "locks")?;
    /// let g2 = g.clone();
    /// g.on(LOCK, move |name: String, granted: bool| {
    ///     // A grant causally follows the request it answers, at every member.
    ///     if !granted && g2.view().is_some_and(|v| v.i_am_leader()) {
    ///         g2.causal_send(LOCK, (name, true)).unwrap();
    ///     }
    /// })?;
    /// g.join()?;
    /// g.causal_send(LOCK, ("db".to_string(), false))?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn causal_send(&self, code: RequestCode, args: impl IntoArgs) -> Result<(), VsyncError> {
        let args = self.prepare(code, args)?;
        self.inner.system.submit(Cmd::Flav(FlavCmd::Causal {
            gid: self.inner.gid,
            payload: encode_msg(code, &args),
        }))
    }

    /// Isis² `RawSend`: an unreliable multicast — no acknowledgement, no retransmission, no
    /// ordering, at most one datagram (a larger message is a [`VsyncError::Send`] error
    /// here). Delivered to this member too (at once); other members get it if the datagram
    /// arrives. Handlers see [`MsgKind::Raw`]. For gossip-style protocols.
    ///
    /// ```no_run
    /// use vsync::{Group, System};
    /// const GOSSIP: u32 = 0;
    /// let sys = System::start()?;
    /// let g = Group::new(&sys, "gossip")?;
    /// g.on(GOSSIP, |round: u64, load: f64| println!("round {round}: load {load}"))?;
    /// g.join()?;
    /// g.raw_send(GOSSIP, (1u64, 0.25f64))?; // may be lost; never retransmitted
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn raw_send(&self, code: RequestCode, args: impl IntoArgs) -> Result<(), VsyncError> {
        let payload = self.raw_payload(code, args)?;
        self.inner.system.submit(Cmd::Flav(FlavCmd::Raw {
            gid: self.inner.gid,
            to: None,
            payload,
        }))
    }

    /// Isis² `RawP2PSend`: an unreliable message to one member of the current view (see
    /// [`Group::raw_send`]); [`VsyncError::NotMember`] if `to` is not in the view. Handlers
    /// see [`MsgKind::RawP2p`].
    ///
    /// ```no_run
    /// use vsync::{Group, System};
    /// const PING: u32 = 0;
    /// let sys = System::start()?;
    /// let g = Group::new(&sys, "gossip")?;
    /// g.on(PING, |seq: u32| println!("ping {seq}"))?;
    /// g.join()?;
    /// let view = g.view().unwrap();
    /// g.raw_p2p_send(view.members[0], PING, (7u32,))?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn raw_p2p_send(
        &self,
        to: Address,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<(), VsyncError> {
        let payload = self.raw_payload(code, args)?;
        self.check_member(to)?;
        self.inner.system.submit(Cmd::Flav(FlavCmd::Raw {
            gid: self.inner.gid,
            to: Some(to.member_id()),
            payload,
        }))
    }

    /// Isis² `CausalQuery`: like [`Group::query`], with the request sent by
    /// [`Group::causal_send`] (so every member answers after delivering everything the
    /// request causally follows). Replies are collected as for `query`: `want` of ALL,
    /// MAJORITY or k, the [`Timeout`] action, typed / raw / closure collection on
    /// [`Replies`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use vsync::{Group, NReplies, System, Timeout, TimeoutAction};
    /// const COUNT: u32 = 0;
    /// let sys = System::start()?;
    /// let g = Group::new(&sys, "counters")?;
    /// g.on(COUNT, |key: String| key.len() as u64)?;
    /// g.join()?;
    /// let t = Timeout::new(Duration::from_secs(5), TimeoutAction::Failure);
    /// let r = g.causal_query(NReplies::All, t, COUNT, ("apples".to_string(),))?;
    /// let counts: Vec<u64> = r.decode()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn causal_query(
        &self,
        want: NReplies,
        timeout: Timeout,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<Replies, VsyncError> {
        let body = self.query_body(code, args)?;
        self.flav_query(Via::Causal, want, timeout, body)
    }

    /// Isis² `RawQuery`: like [`Group::query`], with the request sent by
    /// [`Group::raw_send`] and the replies sent back unreliably (Isis² `RawReply`) when they
    /// fit one datagram (larger replies go reliably). If the request misses some members or
    /// their replies are lost, the query ends by its [`Timeout`] action (a
    /// [`TimeoutAction::Failure`](crate::TimeoutAction::Failure) reports the silent members
    /// as failed, as for any query).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use vsync::{Group, NReplies, System, Timeout, TimeoutAction};
    /// const LOAD: u32 = 0;
    /// let sys = System::start()?;
    /// let g = Group::new(&sys, "gossip")?;
    /// g.on(LOAD, || 0.5f64)?;
    /// g.join()?;
    /// let t = Timeout::new(Duration::from_millis(200), TimeoutAction::NullReply);
    /// let loads: Vec<f64> = g.raw_query(NReplies::Majority, t, LOAD, ())?.decode()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn raw_query(
        &self,
        want: NReplies,
        timeout: Timeout,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<Replies, VsyncError> {
        let body = self.raw_query_body(code, args)?;
        self.flav_query(Via::Raw, want, timeout, body)
    }

    /// Isis² `P2PQuery`: a reliable request to one member of the current view, which
    /// replies; waits for that one reply or the [`Timeout`]. [`VsyncError::NotMember`] if
    /// `member` is not in the view. If `member` leaves or fails while the query waits, the
    /// call returns with no reply (empty [`Replies`], the member in
    /// [`Replies::crashed`]); an `AbortReply` fails it with [`VsyncError::Query`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use vsync::{Group, System, Timeout, TimeoutAction};
    /// const GET: u32 = 0;
    /// let sys = System::start()?;
    /// let g = Group::new(&sys, "kv")?;
    /// g.on(GET, |key: String| format!("value of {key}"))?;
    /// g.join()?;
    /// let leader = g.view().unwrap().members[0];
    /// let t = Timeout::new(Duration::from_secs(5), TimeoutAction::Abort);
    /// let r = g.p2p_query(leader, t, GET, ("x".to_string(),))?;
    /// let v: Vec<String> = r.decode()?; // one element, or none if the leader failed
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn p2p_query(
        &self,
        member: Address,
        timeout: Timeout,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<Replies, VsyncError> {
        let body = self.query_body(code, args)?;
        self.check_member(member)?;
        self.flav_query(Via::P2p(member.member_id()), NReplies::All, timeout, body)
    }

    /// Isis² `RawP2PQuery`: [`Group::p2p_query`] with the request sent by
    /// [`Group::raw_p2p_send`] and the reply sent back unreliably when it fits one datagram;
    /// a lost request or reply ends the query by its [`Timeout`] action.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use vsync::{Group, System, Timeout, TimeoutAction};
    /// const PING: u32 = 0;
    /// let sys = System::start()?;
    /// let g = Group::new(&sys, "gossip")?;
    /// g.on(PING, |n: u32| n + 1)?;
    /// g.join()?;
    /// let peer = g.view().unwrap().members[0];
    /// let t = Timeout::new(Duration::from_millis(100), TimeoutAction::NullReply);
    /// let pong: Vec<u32> = g.raw_p2p_query(peer, t, PING, (1u32,))?.decode()?;
    /// # Ok::<(), vsync::VsyncError>(())
    /// ```
    pub fn raw_p2p_query(
        &self,
        member: Address,
        timeout: Timeout,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<Replies, VsyncError> {
        let body = self.raw_query_body(code, args)?;
        self.check_member(member)?;
        self.flav_query(
            Via::RawP2p(member.member_id()),
            NReplies::All,
            timeout,
            body,
        )
    }

    fn check_member(&self, who: Address) -> Result<(), VsyncError> {
        if self.view().is_some_and(|v| v.contains(who)) {
            Ok(())
        } else {
            Err(VsyncError::NotMember { member: who })
        }
    }

    /// Refuses a raw payload of `len` bytes above one datagram.
    fn check_raw_len(&self, len: usize) -> Result<(), VsyncError> {
        let max = self.inner.system.inner.max_raw;
        if len > max {
            return Err(VsyncError::Send(format!(
                "raw message of {len} bytes exceeds one datagram ({max} bytes)"
            )));
        }
        Ok(())
    }

    /// The `message` payload of a raw send, checked against one datagram.
    fn raw_payload(&self, code: RequestCode, args: impl IntoArgs) -> Result<Vec<u8>, VsyncError> {
        let args = self.prepare(code, args)?;
        let payload = encode_msg(code, &args);
        self.check_raw_len(payload.len())?;
        Ok(payload)
    }

    /// A query's `code:u32-LE arglist`.
    pub(super) fn query_body(
        &self,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<Vec<u8>, VsyncError> {
        let args = self.prepare(code, args)?;
        let mut body = Vec::with_capacity(args.as_bytes().len() + 4);
        body.extend_from_slice(&code.to_le_bytes());
        body.extend_from_slice(args.as_bytes());
        Ok(body)
    }

    /// [`Group::query_body`] for a request that must fit one datagram (tag and query id
    /// included).
    fn raw_query_body(
        &self,
        code: RequestCode,
        args: impl IntoArgs,
    ) -> Result<Vec<u8>, VsyncError> {
        let body = self.query_body(code, args)?;
        self.check_raw_len(body.len() + 9)?;
        Ok(body)
    }

    fn flav_query(
        &self,
        via: Via,
        want: NReplies,
        timeout: Timeout,
        body: Vec<u8>,
    ) -> Result<Replies, VsyncError> {
        let gid = self.inner.gid;
        self.await_replies(timeout, "query replies", |done| {
            Cmd::Flav(FlavCmd::Query {
                gid,
                via,
                want,
                timeout,
                body,
                done,
            })
        })
    }
}
