//! [`VsyncError`]: what every [`System`](crate::System) and [`Group`](crate::Group) call
//! may fail with. Calls never panic on bad input or after shutdown: they return one of these.

use std::fmt;

use crate::marshal::{DispatchError, RegistryError};
use crate::query::QueryError;
use crate::safe::SafeError;

/// Why a vsync call failed.
///
/// ```
/// use vsync::VsyncError;
/// let e = VsyncError::ShutDown;
/// assert_eq!(e.to_string(), "the vsync system was shut down");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VsyncError {
    /// [`System::shutdown`](crate::System::shutdown) was called (or the system stopped).
    ShutDown,
    /// This process incarnation was excluded by the oracle (for example after a long stall);
    /// restart the process. The text says why.
    Poisoned(String),
    /// The configuration is unusable; the text names the variable or option.
    Config(String),
    /// The system could not start (sockets, engine, oracle); the text says why.
    Start(String),
    /// The group has not been joined (or was left).
    NotJoined {
        /// The group's name.
        group: String,
    },
    /// The call is only allowed before joining (registering handlers) or the group was
    /// already joined.
    AlreadyJoined {
        /// The group's name.
        group: String,
    },
    /// The oracle refused the join, create or leave; the text is its reason (for a signature
    /// mismatch it names both signatures).
    Refused {
        /// The group's name.
        group: String,
        /// The oracle's reason.
        reason: String,
    },
    /// The arguments match no handler registered for the request code; the error names the
    /// signatures expected.
    Signature(DispatchError),
    /// A query failed: an `AbortReply`, a timeout with abort, or replies that do not decode.
    Query(QueryError),
    /// The data plane refused the message (for example it is larger than the limit).
    Send(String),
    /// The destination of a P2P send is not a member of the group's current view.
    NotMember {
        /// The destination.
        member: crate::marshal::Address,
    },
    /// A user type used in a handler signature is not registered consistently.
    Registry(String),
    /// The call did not complete in time; the text says what was waited for.
    Timeout(String),
    /// A persistent group's checkpoint file could not be read or written; the text names the
    /// file and the problem (a corrupt file fails the join and leaves `.bak` untouched).
    Checkpoint(String),
    /// A SafeSend call was misused (zero threshold, `done` of an unknown tag, ...) or the
    /// durability method failed.
    Safe(SafeError),
}

impl fmt::Display for VsyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VsyncError::ShutDown => f.write_str("the vsync system was shut down"),
            VsyncError::Poisoned(why) => {
                write!(f, "this process was poisoned ({why}): restart it")
            }
            VsyncError::Config(m) => write!(f, "configuration: {m}"),
            VsyncError::Start(m) => write!(f, "vsync could not start: {m}"),
            VsyncError::NotJoined { group } => write!(f, "group {group:?} is not joined"),
            VsyncError::AlreadyJoined { group } => write!(
                f,
                "group {group:?} is already joined (handlers must be registered before Join)"
            ),
            VsyncError::Refused { group, reason } => {
                write!(
                    f,
                    "the oracle refused the request for group {group:?}: {reason}"
                )
            }
            VsyncError::Signature(e) => write!(f, "{e}"),
            VsyncError::Query(e) => write!(f, "{e}"),
            VsyncError::Send(m) => write!(f, "send refused: {m}"),
            VsyncError::NotMember { member } => {
                write!(f, "{member} is not a member of the group's current view")
            }
            VsyncError::Registry(m) => write!(f, "type registry: {m}"),
            VsyncError::Timeout(m) => write!(f, "timed out waiting for {m}"),
            VsyncError::Checkpoint(m) => write!(f, "persistent checkpoint: {m}"),
            VsyncError::Safe(e) => write!(f, "SafeSend: {e}"),
        }
    }
}

impl std::error::Error for VsyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VsyncError::Signature(e) => Some(e),
            VsyncError::Query(e) => Some(e),
            VsyncError::Safe(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DispatchError> for VsyncError {
    fn from(e: DispatchError) -> Self {
        VsyncError::Signature(e)
    }
}

impl From<QueryError> for VsyncError {
    fn from(e: QueryError) -> Self {
        VsyncError::Query(e)
    }
}

impl From<SafeError> for VsyncError {
    fn from(e: SafeError) -> Self {
        VsyncError::Safe(e)
    }
}

impl From<RegistryError> for VsyncError {
    fn from(e: RegistryError) -> Self {
        VsyncError::Registry(e.to_string())
    }
}
