//! Marshalling of typed argument lists, request handlers keyed by signature, and the group
//! agreement check on handler signatures (the Isis² `Msg` layer, in Rust).
//!
//! * [`Encode`] / [`Marshal`] — encode into a [`Writer`], decode from a [`Reader`]; decoding
//!   never panics and checks every length against the input and the [`Limits`]. Built in:
//!   all integers, `f32`/`f64`, `bool`, `char`, `String`/`&str`, `Vec<T>`/`&[T]` (`Vec<u8>`
//!   as compact bytes), `[T; N]`, `Option<T>`, tuples up to 12, `BTreeMap`/`HashMap`,
//!   `Box`/`Arc`, [`Address`] and [`View`].
//! * [`TypeDesc`] — a deep type descriptor; [`Signature`] — a list of them.
//! * User types — [`impl_marshal!`](crate::impl_marshal) / [`marshal_struct!`](crate::marshal_struct)
//!   with a type id, registered in a [`TypeRegistry`].
//! * [`ArgList`] — signature + encoded values, built with [`args!`](crate::args) from a
//!   tuple ([`Args`]) and decoded into one ([`FromArgs`]) after a signature check.
//! * [`Handlers`] — typed closures keyed by request code and signature (several per code).
//! * [`SignatureSet`] / [`compare`] — what a joiner and the group must agree on, deeply.
//!
//! # Encoding
//!
//! | type | bytes |
//! |---|---|
//! | `bool` | 1 byte: 0 or 1 |
//! | `u8`, `i8` | 1 raw byte |
//! | `u16`..`u64`, `usize` | LEB128 varint, shortest form (`usize` as `u64`) |
//! | `i16`..`i64`, `isize` | zigzag, then varint (`isize` as `i64`) |
//! | `u128`, `i128` | as above, up to 19 bytes |
//! | `f32`, `f64` | IEEE-754 bits, little-endian |
//! | `char` | code point, varint |
//! | `String`, `&str` | byte length (varint), UTF-8 bytes |
//! | `Vec<T>`, `&[T]` | count (varint), elements (`Vec<u8>`: the raw bytes) |
//! | `[T; N]` | N elements |
//! | `Option<T>` | 0, or 1 then the value |
//! | tuple | elements in order |
//! | `BTreeMap`, `HashMap` | count, then key, value pairs (sorted by key / by encoded key) |
//! | `Address` | 8 bytes little-endian |
//! | `View` | group (8 bytes LE), id (varint), members, joined, left (`Vec<Address>`) |
//! | user struct | fields in order |
//! | user enum | variant index (varint), then its fields |
//!
//! Type codes (one tag byte per node, children follow): `bool 01, char 02, u8 03, u16 04,
//! u32 05, u64 06, u128 07, i8 08, i16 09, i32 0a, i64 0b, i128 0c, f32 0d, f64 0e,
//! String 0f, Address 10, View 11, Vec 20 T, [T; N] 21 N T, Option 22 T,
//! tuple 23 n T.., Map 24 K V, user type 30 id`.
//!
//! ```
//! use vsync::args;
//! use vsync::marshal::Handlers;
//!
//! vsync::marshal_struct! {
//!     #[derive(Clone, Debug, PartialEq)]
//!     pub struct Tuple { pub rank: i32, pub value: i32 }
//!     type_id = 0
//! }
//!
//! const UPDATE: u32 = 0;
//! let mut db = Vec::new();
//! let mut h = Handlers::new();
//! h.on(UPDATE, move |t: Tuple| { db.push(t); db.len() as u32 });
//! let reply = h.dispatch(UPDATE, &args!(Tuple { rank: 1, value: 4 })).unwrap();
//! ```

#![deny(missing_docs)]

mod address;
mod args;
mod collections;
mod desc;
mod error;
mod handlers;
mod primitives;
mod registry;
mod signature;
mod traits;
mod tuples;
#[doc(hidden)]
pub mod user;
mod wire;

pub use address::{Address, View};
pub use args::{ArgList, Args, ArgsRef, FromArgs, ARGLIST_VERSION};
pub use desc::{
    Fields, Shape, Signature, TypeDesc, TypeId, UserType, Variant, MAX_NAME_LEN, MAX_TYPE_DEPTH,
    RESERVED_TYPE_IDS,
};
pub use error::{MarshalError, SignatureMismatchInfo};
pub use handlers::{DispatchError, Handler, Handlers, IntoReply, Reply, RequestCode};
pub use registry::{RegistryError, TypeRegistry};
pub use signature::{
    compare, Difference, SignatureMismatch, SignatureSet, SIGNATURE_SET_TYPE_ID,
    SIGNATURE_SET_VERSION,
};
pub use traits::{Encode, Marshal};
pub use user::describe_user;
pub use wire::{CodeSink, Limits, Reader, Writer};

pub use crate::{args, impl_marshal, marshal_struct};

/// The traits and types most code needs: `use vsync::marshal::prelude::*;`.
pub mod prelude {
    pub use super::{
        compare, Address, ArgList, ArgsRef, Encode, Handlers, Marshal, Reply, SignatureSet,
        TypeRegistry, View,
    };
    pub use crate::{args, impl_marshal, marshal_struct};
}
