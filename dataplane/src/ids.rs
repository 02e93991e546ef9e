//! Identifiers that appear on the wire: groups, members (process addresses with incarnation)
//! and view ids.

use std::fmt;

/// A group's stable 64-bit identifier (stable across member incarnations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u64);

/// A member (process) address: the high 32 bits name the process, the low 32 bits its
/// incarnation, so a restarted process is a different member.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub u64);

impl MemberId {
    /// Builds a member id from a process number and an incarnation.
    pub const fn new(process: u32, incarnation: u32) -> Self {
        MemberId(((process as u64) << 32) | incarnation as u64)
    }
    /// The process part.
    pub const fn process(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// The incarnation part.
    pub const fn incarnation(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "M{}.{}", self.process(), self.incarnation())
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "G{:x}", self.0)
    }
}

/// A view (epoch) number within a group; increases by one per installed view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ViewId(pub u32);
