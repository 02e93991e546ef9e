//! [`AddressBook`]: how a protocol [`Destination`] becomes socket addresses.
//!
//! Members map to unicast addresses. A group maps either to one IP-multicast address (one send
//! reaches everyone) or to a member list (UDP unicast fan-out: one send per member other than
//! the local one). The engine resolves each run of datagrams once per batch.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};

use crate::protocol::Destination;
use crate::{GroupId, MemberId};

/// How a group is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
enum GroupRoute {
    Multicast(SocketAddrV4),
    Unicast(Vec<MemberId>),
}

/// The engine's routing table from protocol identities to socket addresses.
#[derive(Clone, Debug, Default)]
pub struct AddressBook {
    local: Option<MemberId>,
    members: HashMap<MemberId, SocketAddr>,
    groups: HashMap<GroupId, GroupRoute>,
}

impl AddressBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the local member; unicast fan-out to a group skips it.
    pub fn set_local(&mut self, me: MemberId) {
        self.local = Some(me);
    }

    /// Sets (or replaces) a member's unicast address.
    pub fn set_member(&mut self, member: MemberId, addr: SocketAddr) {
        self.members.insert(member, addr);
    }

    /// Forgets a member's address; sends to it count as `no_route` from now on.
    pub fn remove_member(&mut self, member: MemberId) {
        self.members.remove(&member);
    }

    /// Routes [`Destination::Group`] for `group` as one send to this multicast address.
    pub fn set_group_multicast(&mut self, group: GroupId, addr: SocketAddrV4) {
        self.groups.insert(group, GroupRoute::Multicast(addr));
    }

    /// Routes [`Destination::Group`] for `group` as one unicast send per member, minus the
    /// local member.
    pub fn set_group_unicast(&mut self, group: GroupId, members: Vec<MemberId>) {
        self.groups.insert(group, GroupRoute::Unicast(members));
    }

    /// Forgets a group's route; sends to it count as `no_route` from now on.
    pub fn remove_group(&mut self, group: GroupId) {
        self.groups.remove(&group);
    }

    /// A member's address, if known.
    pub fn member(&self, member: MemberId) -> Option<SocketAddr> {
        self.members.get(&member).copied()
    }

    /// Appends the IPv4 targets of `destination` to `targets` (which the caller clears and
    /// reuses) and returns how many targets could not be resolved (unknown member or group,
    /// or an address that is not IPv4 — the engine's sockets are IPv4).
    pub(crate) fn resolve(&self, destination: Destination, targets: &mut Vec<SocketAddrV4>) -> u64 {
        let v4 = |addr: SocketAddr| match addr {
            SocketAddr::V4(addr) => Some(addr),
            SocketAddr::V6(_) => None,
        };
        match destination {
            Destination::Member(member) => match self.members.get(&member).copied().and_then(v4) {
                Some(addr) => {
                    targets.push(addr);
                    0
                }
                None => 1,
            },
            Destination::Group(group) => match self.groups.get(&group) {
                None => 1,
                Some(GroupRoute::Multicast(addr)) => {
                    targets.push(*addr);
                    0
                }
                Some(GroupRoute::Unicast(members)) => {
                    let mut missing = 0;
                    for &member in members {
                        if Some(member) == self.local {
                            continue;
                        }
                        match self.members.get(&member).copied().and_then(v4) {
                            Some(addr) => targets.push(addr),
                            None => missing += 1,
                        }
                    }
                    missing
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addr(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
    }

    #[test]
    fn fan_out_skips_local_and_counts_unknown() {
        let mut book = AddressBook::new();
        let (a, b, c, d) = (MemberId(1), MemberId(2), MemberId(3), MemberId(4));
        book.set_local(a);
        book.set_member(a, addr(1).into());
        book.set_member(b, addr(2).into());
        book.set_member(c, addr(3).into());
        book.set_group_unicast(GroupId(7), vec![a, b, c, d]);
        let mut targets = Vec::new();
        assert_eq!(
            book.resolve(Destination::Group(GroupId(7)), &mut targets),
            1
        );
        assert_eq!(targets, vec![addr(2), addr(3)]);

        targets.clear();
        book.set_group_multicast(
            GroupId(7),
            SocketAddrV4::new(Ipv4Addr::new(239, 1, 2, 3), 9),
        );
        assert_eq!(
            book.resolve(Destination::Group(GroupId(7)), &mut targets),
            0
        );
        assert_eq!(targets.len(), 1);

        targets.clear();
        book.remove_group(GroupId(7));
        book.remove_member(b);
        assert_eq!(
            book.resolve(Destination::Group(GroupId(7)), &mut targets),
            1
        );
        assert_eq!(book.resolve(Destination::Member(b), &mut targets), 1);
        assert!(targets.is_empty());
    }
}
