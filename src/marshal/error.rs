//! [`MarshalError`]: why a byte string could not be decoded as the value asked for.
//!
//! Decoding never panics: every malformed, truncated, hostile or mistyped input ends in one of
//! these variants.

use std::fmt;

use super::desc::Signature;

/// Why decoding failed.
///
/// ```
/// use vsync::marshal::{Marshal, MarshalError};
///
/// // A bool is one byte, 0 or 1.
/// assert_eq!(bool::from_bytes(&[2]), Err(MarshalError::InvalidBool(2)));
/// assert!(matches!(u32::from_bytes(&[]), Err(MarshalError::Truncated { .. })));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MarshalError {
    /// The input ended before the value did.
    Truncated {
        /// Bytes the decoder needed at that point.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A complete value was decoded but bytes were left over.
    TrailingBytes(usize),
    /// A varint was longer than ten bytes, overflowed, or was not in its shortest form.
    BadVarint,
    /// A decoded integer does not fit the target type.
    OutOfRange(&'static str),
    /// A bool byte other than 0 or 1.
    InvalidBool(u8),
    /// A code point that is not a Unicode scalar value.
    InvalidChar(u32),
    /// A string that is not UTF-8.
    InvalidUtf8,
    /// An `Option` tag other than 0 (None) or 1 (Some).
    InvalidOptionTag(u8),
    /// An enum variant index the type does not have.
    UnknownVariant {
        /// The enum's registered name.
        ty: &'static str,
        /// The index found.
        index: u64,
    },
    /// A type code that no type uses.
    UnknownTypeCode(u8),
    /// A map carried the same key twice.
    DuplicateKey,
    /// A declared length above [`Limits::max_len`](super::Limits::max_len).
    LengthLimit {
        /// The declared length.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// Nesting deeper than the limit (recursive user types, or type descriptors).
    DepthLimit(u32),
    /// More zero-byte collection elements than
    /// [`Limits::max_empty_elements`](super::Limits::max_empty_elements).
    WorkLimit(u64),
    /// The argument list has another signature than the one asked for.
    SignatureMismatch(Box<SignatureMismatchInfo>),
    /// A format version this build does not understand.
    UnsupportedVersion(u8),
    /// Canonical-form violation (for example an unsorted signature set).
    NonCanonical(&'static str),
    /// A user type's own validation failed.
    Invalid(String),
}

/// The two signatures of a [`MarshalError::SignatureMismatch`].
///
/// ```
/// use vsync::marshal::{ArgList, MarshalError};
/// let err = ArgList::new(&(1i32,)).decode::<(String,)>().unwrap_err();
/// let MarshalError::SignatureMismatch(info) = err else { panic!("{err}") };
/// assert_eq!(info.expected.to_string(), "(String)");
/// assert_eq!(info.actual.to_string(), "(i32)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureMismatchInfo {
    /// The signature the receiver asked for.
    pub expected: Signature,
    /// The signature the message carries.
    pub actual: Signature,
}

impl MarshalError {
    /// Builds a [`MarshalError::SignatureMismatch`].
    ///
    /// ```
    /// use vsync::marshal::{Args, MarshalError};
    /// let e = MarshalError::signature_mismatch(<(u8,)>::signature(), <(i8,)>::signature());
    /// assert_eq!(e.to_string(), "signature mismatch: expected (u8) but the message carries (i8)");
    /// ```
    pub fn signature_mismatch(expected: Signature, actual: Signature) -> Self {
        MarshalError::SignatureMismatch(Box::new(SignatureMismatchInfo { expected, actual }))
    }
}

impl fmt::Display for MarshalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MarshalError::*;
        match self {
            Truncated { needed, remaining } => write!(
                f,
                "input truncated: needed {needed} more byte(s), {remaining} left"
            ),
            TrailingBytes(n) => write!(f, "{n} unexpected trailing byte(s) after the value"),
            BadVarint => f.write_str("malformed varint (overlong, overflowing or not minimal)"),
            OutOfRange(ty) => write!(f, "integer out of range for {ty}"),
            InvalidBool(b) => write!(f, "invalid bool byte {b:#04x}"),
            InvalidChar(c) => write!(f, "invalid char code point {c:#x}"),
            InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            InvalidOptionTag(t) => write!(f, "invalid Option tag {t:#04x}"),
            UnknownVariant { ty, index } => write!(f, "{ty} has no variant number {index}"),
            UnknownTypeCode(c) => write!(f, "unknown type code {c:#04x}"),
            DuplicateKey => f.write_str("map key occurs twice"),
            LengthLimit { len, limit } => {
                write!(f, "declared length {len} exceeds the limit of {limit}")
            }
            DepthLimit(d) => write!(f, "nesting deeper than {d} levels"),
            WorkLimit(n) => write!(f, "more than {n} zero-length collection elements"),
            SignatureMismatch(m) => write!(
                f,
                "signature mismatch: expected {} but the message carries {}",
                m.expected, m.actual
            ),
            UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            NonCanonical(what) => write!(f, "non-canonical encoding: {what}"),
            Invalid(msg) => write!(f, "invalid value: {msg}"),
        }
    }
}

impl std::error::Error for MarshalError {}
