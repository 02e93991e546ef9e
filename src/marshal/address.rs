//! [`Address`] and [`View`], the two vsync types every group handler may receive, as plain
//! marshallable data.
//!
//! * `Address`: the member id, 8 bytes little-endian (process in the high half, incarnation in
//!   the low half).
//! * `View`: group id (8 bytes LE), view id (varint), then `members`, `joined` and `left` as
//!   `Vec<Address>` (count, then 8 bytes each).

use std::fmt;

use vsync_dataplane::{GroupId, MemberId, ViewId};

use super::desc::{tag, TypeDesc};
use super::error::MarshalError;
use super::traits::{Encode, Marshal};
use super::wire::{CodeSink, Reader, Writer};

/// A member's address: a [`MemberId`], i.e. `process << 32 | incarnation`, so a restarted
/// process has a different address.
///
/// ```
/// use vsync::dataplane::MemberId;
/// use vsync::marshal::{Address, Encode, Marshal};
///
/// let a = Address::new(7, 2);
/// assert_eq!((a.process(), a.incarnation()), (7, 2));
/// assert_eq!(Address::from(MemberId::new(7, 2)), a);
/// assert_eq!(Address::from_bytes(&a.to_bytes()).unwrap(), a);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub u64);

impl Address {
    /// The address of incarnation `incarnation` of process `process`.
    ///
    /// ```
    /// use vsync::marshal::Address;
    /// const LEADER: Address = Address::new(1, 0);
    /// assert_eq!(LEADER.0, 1 << 32);
    /// ```
    pub const fn new(process: u32, incarnation: u32) -> Self {
        Address(((process as u64) << 32) | incarnation as u64)
    }

    /// The process part.
    ///
    /// ```
    /// use vsync::marshal::Address;
    /// assert_eq!(Address::new(7, 2).process(), 7);
    /// ```
    pub const fn process(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The incarnation part.
    ///
    /// ```
    /// use vsync::marshal::Address;
    /// assert_eq!(Address::new(7, 2).incarnation(), 2);
    /// ```
    pub const fn incarnation(self) -> u32 {
        self.0 as u32
    }

    /// The data plane's member id for this address.
    ///
    /// ```
    /// use vsync::marshal::Address;
    /// let a = Address::new(7, 2);
    /// assert_eq!(Address::from(a.member_id()), a);
    /// ```
    pub const fn member_id(self) -> MemberId {
        MemberId(self.0)
    }
}

impl From<MemberId> for Address {
    fn from(m: MemberId) -> Self {
        Address(m.0)
    }
}

impl From<Address> for MemberId {
    fn from(a: Address) -> Self {
        MemberId(a.0)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "M{}.{}", self.process(), self.incarnation())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Encode for Address {
    fn type_desc() -> TypeDesc {
        TypeDesc::Address
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(tag::ADDRESS)
    }
    #[inline]
    fn encode(&self, w: &mut Writer) {
        w.put_bytes(&self.0.to_le_bytes())
    }
}

impl Marshal for Address {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        Ok(Address(u64::from_le_bytes(r.take_array()?)))
    }
}

/// A group membership view: the group, the view number, the members in rank order, and who
/// joined and who left (or failed) since the previous view.
///
/// ```
/// use vsync::marshal::{Address, Encode, Marshal, View};
///
/// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
/// let v = View { group: 9, id: 1, members: vec![a, b], joined: vec![b], left: vec![] };
/// assert_eq!(v.rank_of(b), Some(1));
/// assert_eq!(View::from_bytes(&v.to_bytes()).unwrap(), v);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct View {
    /// The group's id.
    pub group: u64,
    /// The view number (increases by one per view).
    pub id: u32,
    /// The members, in rank order (oldest first).
    pub members: Vec<Address>,
    /// Members that joined in this view.
    pub joined: Vec<Address>,
    /// Members that left or failed in this view.
    pub left: Vec<Address>,
}

impl View {
    /// The rank (index in `members`) of `who`, if a member.
    ///
    /// ```
    /// use vsync::marshal::{Address, View};
    /// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
    /// let v = View { group: 9, id: 1, members: vec![a, b], joined: vec![], left: vec![] };
    /// assert_eq!((v.rank_of(a), v.rank_of(Address::new(3, 1))), (Some(0), None));
    /// ```
    pub fn rank_of(&self, who: Address) -> Option<usize> {
        self.members.iter().position(|&m| m == who)
    }

    /// True if `who` is a member.
    ///
    /// ```
    /// use vsync::marshal::{Address, View};
    /// let (a, b) = (Address::new(1, 1), Address::new(2, 1));
    /// let v = View { group: 9, id: 2, members: vec![a], joined: vec![], left: vec![b] };
    /// assert!(v.contains(a) && !v.contains(b));
    /// ```
    pub fn contains(&self, who: Address) -> bool {
        self.rank_of(who).is_some()
    }

    /// The number of members.
    ///
    /// ```
    /// use vsync::marshal::{Address, View};
    /// let v = View { group: 9, id: 1, members: vec![Address::new(1, 1)], ..View::default() };
    /// assert_eq!(v.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True if there are no members.
    ///
    /// ```
    /// use vsync::marshal::View;
    /// assert!(View::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The group id as the data plane's type.
    ///
    /// ```
    /// use vsync::marshal::View;
    /// let v = View { group: 9, ..View::default() };
    /// assert_eq!(v.group_id(), vsync::dataplane::GroupId(9));
    /// ```
    pub fn group_id(&self) -> GroupId {
        GroupId(self.group)
    }

    /// The view id as the data plane's type.
    ///
    /// ```
    /// use vsync::marshal::View;
    /// let v = View { id: 4, ..View::default() };
    /// assert_eq!(v.view_id(), vsync::dataplane::ViewId(4));
    /// ```
    pub fn view_id(&self) -> ViewId {
        ViewId(self.id)
    }
}

impl Encode for View {
    fn type_desc() -> TypeDesc {
        TypeDesc::View
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(tag::VIEW)
    }
    fn encode(&self, w: &mut Writer) {
        w.put_bytes(&self.group.to_le_bytes());
        self.id.encode(w);
        self.members.encode(w);
        self.joined.encode(w);
        self.left.encode(w);
    }
}

impl Marshal for View {
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        Ok(View {
            group: u64::from_le_bytes(r.take_array()?),
            id: u32::decode(r)?,
            members: Vec::decode(r)?,
            joined: Vec::decode(r)?,
            left: Vec::decode(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_layout_and_conversions() {
        let a = Address::new(0x0102_0304, 5);
        assert_eq!(a.to_bytes(), [5, 0, 0, 0, 4, 3, 2, 1]);
        assert_eq!(MemberId::from(a), MemberId::new(0x0102_0304, 5));
        assert_eq!(a.member_id().process(), 0x0102_0304);
        assert_eq!(a.to_string(), "M16909060.5");
    }

    #[test]
    fn view_bytes() {
        let v = View {
            group: 1,
            id: 2,
            members: vec![Address::new(0, 1)],
            joined: vec![],
            left: vec![Address::new(0, 2)],
        };
        let b = v.to_bytes();
        assert_eq!(b.len(), 8 + 1 + 1 + 8 + 1 + 1 + 8);
        assert_eq!(View::from_bytes(&b).unwrap(), v);
        assert_eq!(v.group_id(), GroupId(1));
        assert_eq!(v.view_id(), ViewId(2));
        assert!(View::from_bytes(&b[..b.len() - 1]).is_err());
    }
}
