//! The [`Encode`] and [`Marshal`] traits.
//!
//! `Encode` is the sending half (also implemented by borrowed forms such as `&str` and
//! `&[T]`, so arguments need not be cloned); `Marshal` adds decoding. Built-in types implement
//! both; user types get them from [`impl_marshal!`](crate::impl_marshal) or
//! [`marshal_struct!`](crate::marshal_struct), or by hand.

use super::desc::TypeDesc;
use super::error::MarshalError;
use super::wire::{CodeSink, Reader, Writer};

/// A type that can be encoded and described.
///
/// ```
/// use vsync::marshal::{Encode, TypeDesc};
///
/// assert_eq!(<str as Encode>::type_desc(), TypeDesc::String);
/// assert_eq!("hi".to_bytes(), vec![2, b'h', b'i']);
/// ```
pub trait Encode {
    /// The deep descriptor of this type.
    ///
    /// ```
    /// use vsync::marshal::{Encode, TypeDesc};
    /// assert_eq!(Option::<u8>::type_desc(), TypeDesc::option(TypeDesc::U8));
    /// ```
    fn type_desc() -> TypeDesc;

    /// Writes this type's shallow type code. The default derives it from
    /// [`type_desc`](Encode::type_desc); implementations override it only for speed, and the
    /// result must equal `Self::type_desc().write_code(s)`.
    ///
    /// ```
    /// use vsync::marshal::Encode;
    /// let mut code = Vec::new();
    /// Vec::<i32>::write_type_code(&mut code);
    /// assert_eq!(code, Vec::<i32>::type_desc().code());
    /// ```
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        Self::type_desc().write_code(s)
    }

    /// Appends the encoding of `self`.
    ///
    /// ```
    /// use vsync::marshal::{Encode, Writer};
    /// let mut w = Writer::new();
    /// true.encode(&mut w);
    /// "ab".encode(&mut w);
    /// assert_eq!(w.as_bytes(), &[1, 2, b'a', b'b']);
    /// ```
    fn encode(&self, w: &mut Writer);

    /// Appends the encodings of `items`, one after the other (no length). Byte-sized types
    /// override it with a single copy.
    ///
    /// ```
    /// use vsync::marshal::{Encode, Writer};
    /// let mut w = Writer::new();
    /// u8::encode_slice(&[1, 2, 3], &mut w);
    /// assert_eq!(w.as_bytes(), &[1, 2, 3]); // no length prefix
    /// ```
    fn encode_slice(items: &[Self], w: &mut Writer)
    where
        Self: Sized,
    {
        for item in items {
            item.encode(w);
        }
    }

    /// The encoding of `self` as a fresh vector.
    ///
    /// ```
    /// use vsync::marshal::Encode;
    /// assert_eq!(300u32.to_bytes(), [0xac, 0x02]);
    /// ```
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_vec()
    }
}

/// A type that can be encoded, described and decoded.
///
/// Decoding never panics: malformed input is a [`MarshalError`]. Lengths are checked against
/// the remaining input and the reader's [`Limits`](super::Limits) before anything is
/// allocated.
///
/// ```
/// use vsync::marshal::{Encode, Marshal};
///
/// let v: Vec<(String, Option<i64>)> = vec![("a".into(), Some(-1)), ("b".into(), None)];
/// assert_eq!(Vec::<(String, Option<i64>)>::from_bytes(&v.to_bytes()).unwrap(), v);
/// ```
pub trait Marshal: Encode + Sized {
    /// Decodes one value, consuming exactly its encoding.
    ///
    /// ```
    /// use vsync::marshal::{Marshal, Reader};
    /// let mut r = Reader::new(&[1, 7]);
    /// assert_eq!((bool::decode(&mut r).unwrap(), u8::decode(&mut r).unwrap()), (true, 7));
    /// ```
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError>;

    /// Decodes `n` consecutive values (the elements of a `Vec<Self>`). Byte-sized types
    /// override it with a single copy.
    ///
    /// ```
    /// use vsync::marshal::{Marshal, Reader};
    /// let mut r = Reader::new(&[1, 2, 3]);
    /// assert_eq!(u8::decode_vec(&mut r, 3).unwrap(), [1, 2, 3]);
    /// ```
    fn decode_vec(r: &mut Reader<'_>, n: usize) -> Result<Vec<Self>, MarshalError> {
        let mut v = Vec::with_capacity(r.prealloc::<Self>(n));
        for _ in 0..n {
            let before = r.position();
            v.push(Self::decode(r)?);
            if r.position() == before {
                r.charge_empty_element()?;
            }
        }
        Ok(v)
    }

    /// Decodes a value that must span all of `bytes`.
    ///
    /// ```
    /// use vsync::marshal::{Marshal, MarshalError};
    /// assert_eq!(u32::from_bytes(&[0xac, 0x02]).unwrap(), 300);
    /// assert_eq!(u8::from_bytes(&[1, 2]), Err(MarshalError::TrailingBytes(1)));
    /// ```
    fn from_bytes(bytes: &[u8]) -> Result<Self, MarshalError> {
        let mut r = Reader::new(bytes);
        let v = Self::decode(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}
