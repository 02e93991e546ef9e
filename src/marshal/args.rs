//! Argument lists: [`ArgList`] is a marshalled request (or reply) payload — its signature and
//! its encoded values — built from a Rust tuple ([`Args`]) and decoded back into one
//! ([`FromArgs`]) after checking that the signatures agree.
//!
//! Byte layout of an `ArgList`:
//!
//! ```text
//! version: u8 (= 1)
//! count:   varint                 number of arguments
//! codes:   count type codes       shallow; a user type is 0x30 + its id
//! values:  the encoded arguments, back to back
//! ```
//!
//! ```
//! use vsync::args;
//!
//! let a = args!("User number 7", 7i32, 700i64);
//! assert_eq!(a.signature().to_string(), "(String, i32, i64)");
//! let (name, n, v): (String, i32, i64) = a.decode().unwrap();
//! assert_eq!((name.as_str(), n, v), ("User number 7", 7, 700));
//!
//! let err = a.decode::<(String, i32)>().unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "signature mismatch: expected (String, i32) but the message carries (String, i32, i64)"
//! );
//! ```

use std::fmt;

use super::desc::Signature;
use super::error::MarshalError;
use super::traits::{Encode, Marshal};
use super::wire::{CodeMatcher, CodeSink, Reader, Writer};

/// The `ArgList` format version.
///
/// ```
/// use vsync::marshal::{ArgList, ARGLIST_VERSION};
/// assert_eq!(ArgList::empty().as_bytes()[0], ARGLIST_VERSION);
/// ```
pub const ARGLIST_VERSION: u8 = 1;

/// A tuple of arguments that can be sent: `()`, `(A,)`, `(A, B)`, ... up to 12, where every
/// element is [`Encode`] (so `&str`, `&[T]` and other borrowed forms work).
///
/// ```
/// use vsync::marshal::{ArgList, Args};
/// assert_eq!(<(i32, &str)>::COUNT, 2);
/// assert_eq!(<(i32, &str)>::signature().to_string(), "(i32, String)");
/// let a = ArgList::new(&(1i32, "x")); // borrowed forms encode like owned ones
/// assert!(a.matches::<(i32, String)>());
/// ```
pub trait Args {
    /// The number of arguments.
    ///
    /// ```
    /// use vsync::marshal::Args;
    /// assert_eq!(<(u8, String) as Args>::COUNT, 2);
    /// ```
    const COUNT: usize;

    /// The deep signature.
    ///
    /// ```
    /// use vsync::marshal::Args;
    /// assert_eq!(<(i32, Vec<u8>)>::signature().to_string(), "(i32, Vec<u8>)");
    /// ```
    fn signature() -> Signature;

    /// Writes the signature code: the count, then each argument's type code.
    ///
    /// ```
    /// use vsync::marshal::Args;
    /// let mut code = Vec::new();
    /// <(u8, bool)>::write_signature_code(&mut code);
    /// assert_eq!(code[0], 2); // the count comes first
    /// ```
    fn write_signature_code<S: CodeSink + ?Sized>(s: &mut S);

    /// Appends the encoded arguments.
    ///
    /// ```
    /// use vsync::marshal::{Args, Writer};
    /// let mut w = Writer::new();
    /// (7u8, true).encode_values(&mut w);
    /// assert!(!w.is_empty());
    /// ```
    fn encode_values(&self, w: &mut Writer);
}

/// A tuple of arguments that can be received: [`Args`] whose elements are all [`Marshal`].
///
/// ```
/// use vsync::marshal::{ArgList, FromArgs};
/// fn first<A: FromArgs>(lists: &[ArgList]) -> Option<A> {
///     lists.first()?.decode().ok()
/// }
/// let got: Option<(u8, bool)> = first(&[ArgList::new(&(1u8, true))]);
/// assert_eq!(got, Some((1, true)));
/// ```
pub trait FromArgs: Args + Sized {
    /// Decodes the arguments (the signature was already checked).
    ///
    /// ```
    /// use vsync::marshal::{Args, FromArgs, Reader, Writer};
    /// let mut w = Writer::new();
    /// (7u8, true).encode_values(&mut w);
    /// let bytes = w.into_vec();
    /// let got = <(u8, bool)>::decode_values(&mut Reader::new(&bytes)).unwrap();
    /// assert_eq!(got, (7, true));
    /// ```
    fn decode_values(r: &mut Reader<'_>) -> Result<Self, MarshalError>;
}

impl Args for () {
    const COUNT: usize = 0;
    fn signature() -> Signature {
        Signature(Vec::new())
    }
    fn write_signature_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(0)
    }
    fn encode_values(&self, _w: &mut Writer) {}
}

impl FromArgs for () {
    fn decode_values(_r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        Ok(())
    }
}

macro_rules! args_tuple {
    ($n:expr; $($t:ident $i:tt),+) => {
        impl<$($t: Encode),+> Args for ($($t,)+) {
            const COUNT: usize = $n;
            fn signature() -> Signature {
                Signature(vec![$($t::type_desc()),+])
            }
            #[inline]
            fn write_signature_code<Sink: CodeSink + ?Sized>(s: &mut Sink) {
                s.put_varint($n);
                $($t::write_type_code(s);)+
            }
            #[inline]
            fn encode_values(&self, w: &mut Writer) {
                $(self.$i.encode(w);)+
            }
        }

        impl<$($t: Marshal),+> FromArgs for ($($t,)+) {
            #[inline]
            fn decode_values(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
                Ok(($($t::decode(r)?,)+))
            }
        }
    };
}

args_tuple!(1; A 0);
args_tuple!(2; A 0, B 1);
args_tuple!(3; A 0, B 1, C 2);
args_tuple!(4; A 0, B 1, C 2, D 3);
args_tuple!(5; A 0, B 1, C 2, D 3, E 4);
args_tuple!(6; A 0, B 1, C 2, D 3, E 4, F 5);
args_tuple!(7; A 0, B 1, C 2, D 3, E 4, F 5, G 6);
args_tuple!(8; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
args_tuple!(9; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
args_tuple!(10; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
args_tuple!(11; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
args_tuple!(12; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

/// A marshalled argument list: signature plus encoded values (layout: a version byte, the
/// argument count, the type codes, the values; see the [module docs](crate::marshal)).
///
/// ```
/// use vsync::marshal::ArgList;
///
/// let a = ArgList::new(&(1i32, 100i32));
/// let wire = a.as_bytes().to_vec();
/// let b = ArgList::from_bytes(wire).unwrap();
/// assert!(b.matches::<(i32, i32)>());
/// assert!(!b.matches::<(String, i32)>());
/// assert_eq!(b.decode::<(i32, i32)>().unwrap(), (1, 100));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ArgList {
    bytes: Vec<u8>,
    sig_end: usize,
    count: usize,
}

impl ArgList {
    /// Encodes `args`.
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// let a = ArgList::new(&("k".to_string(), 5u64));
    /// assert_eq!(a.decode::<(String, u64)>().unwrap(), ("k".to_string(), 5));
    /// ```
    pub fn new<A: Args>(args: &A) -> Self {
        let mut w = Writer::with_capacity(32);
        w.put_u8(ARGLIST_VERSION);
        A::write_signature_code(w.vec_mut());
        let sig_end = w.len();
        args.encode_values(&mut w);
        ArgList {
            bytes: w.into_vec(),
            sig_end,
            count: A::COUNT,
        }
    }

    /// An argument list with the single argument `value`.
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// let a = ArgList::one("just this");
    /// assert_eq!(a.len(), 1);
    /// assert_eq!(a.decode_one::<String>().unwrap(), "just this");
    /// ```
    pub fn one<T: Encode + ?Sized>(value: &T) -> Self {
        let mut w = Writer::with_capacity(32);
        w.put_u8(ARGLIST_VERSION);
        w.put_u8(1);
        T::write_type_code(w.vec_mut());
        let sig_end = w.len();
        value.encode(&mut w);
        ArgList {
            bytes: w.into_vec(),
            sig_end,
            count: 1,
        }
    }

    /// The empty argument list.
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// assert!(ArgList::empty().is_empty());
    /// assert_eq!(ArgList::empty(), ArgList::new(&()));
    /// ```
    pub fn empty() -> Self {
        Self::new(&())
    }

    /// Appends the complete `ArgList` encoding of `args` to `w` (for callers that reuse
    /// buffers); the bytes parse with [`ArgList::from_bytes`].
    ///
    /// ```
    /// use vsync::marshal::{ArgList, Writer};
    /// let mut w = Writer::new();
    /// ArgList::encode_into(&(1i32, 2i32), &mut w);
    /// assert_eq!(ArgList::from_bytes(w.into_vec()).unwrap(), ArgList::new(&(1i32, 2i32)));
    /// ```
    pub fn encode_into<A: Args>(args: &A, w: &mut Writer) {
        w.put_u8(ARGLIST_VERSION);
        A::write_signature_code(w.vec_mut());
        args.encode_values(w);
    }

    /// Parses an argument list received from elsewhere, taking ownership of the bytes. The
    /// header and signature are validated now, the values when decoded.
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// let bytes = ArgList::new(&(3i16,)).into_bytes();
    /// assert_eq!(ArgList::from_bytes(bytes).unwrap().decode::<(i16,)>().unwrap(), (3,));
    /// assert!(ArgList::from_bytes(vec![0xff]).is_err());
    /// ```
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, MarshalError> {
        let (sig_end, count) = parse_header(&bytes)?;
        Ok(ArgList {
            bytes,
            sig_end,
            count,
        })
    }

    /// Like [`ArgList::from_bytes`], copying `bytes` (see [`ArgsRef::parse`] to decode in
    /// place).
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// let received = [ArgList::new(&(true,)).as_bytes(), b"trailer"].concat();
    /// let a = ArgList::parse(&received[..received.len() - 7]).unwrap();
    /// assert_eq!(a.decode::<(bool,)>().unwrap(), (true,));
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<Self, MarshalError> {
        Self::from_bytes(bytes.to_vec())
    }

    /// A borrowed view of this list.
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// let a = ArgList::new(&(1u8,));
    /// assert_eq!(a.view().decode::<(u8,)>().unwrap(), (1,));
    /// ```
    pub fn view(&self) -> ArgsRef<'_> {
        ArgsRef {
            bytes: &self.bytes,
            sig_end: self.sig_end,
            count: self.count,
        }
    }

    /// The whole encoding.
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// let a = ArgList::new(&(1u8,));
    /// assert_eq!(ArgList::parse(a.as_bytes()).unwrap(), a);
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes the encoding.
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// let a = ArgList::new(&(1u8,));
    /// let len = a.as_bytes().len();
    /// assert_eq!(a.into_bytes().len(), len);
    /// ```
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The number of arguments.
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// assert_eq!(ArgList::new(&(1u8, 2u16, 3u32)).len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if there are no arguments.
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// assert!(ArgList::new(&()).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The signature code: argument count and type codes.
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// let a = ArgList::new(&(1i32, 2i32));
    /// let b = ArgList::new(&(7i32, 9i32));
    /// assert_eq!(a.signature_code(), b.signature_code()); // same types, other values
    /// assert_eq!(a.signature_code()[0], 2); // the count first
    /// ```
    pub fn signature_code(&self) -> &[u8] {
        self.view().signature_code()
    }

    /// The encoded values.
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// let a = ArgList::new(&(1u8,));
    /// assert!(a.as_bytes().ends_with(a.values()));
    /// ```
    pub fn values(&self) -> &[u8] {
        self.view().values()
    }

    /// The signature carried (user types appear by id only, e.g. `#1001`).
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// assert_eq!(ArgList::new(&(1u8, vec![2i64])).signature().to_string(), "(u8, Vec<i64>)");
    /// ```
    pub fn signature(&self) -> Signature {
        self.view().signature()
    }

    /// True if the list's signature is `A`'s.
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// let a = ArgList::new(&(1i32,));
    /// assert!(a.matches::<(i32,)>() && !a.matches::<(i64,)>());
    /// ```
    pub fn matches<A: Args>(&self) -> bool {
        self.view().matches::<A>()
    }

    /// Decodes the arguments as `A`, after checking the signature; a mismatch names both
    /// signatures.
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    /// let a = ArgList::new(&(1i32, "one"));
    /// assert_eq!(a.decode::<(i32, String)>().unwrap(), (1, "one".to_string()));
    /// assert!(a.decode::<(i32,)>().is_err());
    /// ```
    pub fn decode<A: FromArgs>(&self) -> Result<A, MarshalError> {
        self.view().decode()
    }

    /// Decodes a single-argument list (typically a reply) as `T`.
    ///
    /// ```
    /// use vsync::marshal::ArgList;
    ///
    /// let reply = ArgList::one(&vec![1i32, 2, 3]);
    /// assert_eq!(reply.decode_one::<Vec<i32>>().unwrap(), [1, 2, 3]);
    /// assert_eq!(
    ///     reply.decode_one::<Vec<i64>>().unwrap_err().to_string(),
    ///     "signature mismatch: expected (Vec<i64>) but the message carries (Vec<i32>)"
    /// );
    /// ```
    pub fn decode_one<T: Marshal>(&self) -> Result<T, MarshalError> {
        self.view().decode_one()
    }
}

/// Validates the version and signature; returns the end of the signature and the count.
fn parse_header(bytes: &[u8]) -> Result<(usize, usize), MarshalError> {
    let mut r = Reader::new(bytes);
    let v = r.get_u8()?;
    if v != ARGLIST_VERSION {
        return Err(MarshalError::UnsupportedVersion(v));
    }
    let count = Signature::skip_code(&mut r)?;
    Ok((r.position(), count))
}

impl fmt::Debug for ArgList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.view(), f)
    }
}

/// A borrowed argument list: decodes in place from a received buffer (for example a
/// delivery ring slot), without copying it.
///
/// ```
/// use vsync::marshal::{ArgsRef, Handlers};
///
/// let received: Vec<u8> = vsync::args!("John Smith", 3u8).into_bytes();
/// let a = ArgsRef::parse(&received).unwrap();
/// assert_eq!(a.decode::<(String, u8)>().unwrap(), ("John Smith".to_string(), 3));
///
/// let mut h = Handlers::new();
/// h.on(0, |who: String, n: u8| who.len() + n as usize);
/// h.dispatch(0, a).unwrap();
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArgsRef<'a> {
    bytes: &'a [u8],
    sig_end: usize,
    count: usize,
}

impl<'a> ArgsRef<'a> {
    /// Parses an argument list in place. The header and signature are validated now, the
    /// values when decoded.
    ///
    /// ```
    /// use vsync::marshal::{ArgList, ArgsRef};
    /// let bytes = ArgList::new(&(5u32,)).into_bytes();
    /// let a = ArgsRef::parse(&bytes).unwrap();
    /// assert_eq!(a.decode::<(u32,)>().unwrap(), (5,));
    /// ```
    pub fn parse(bytes: &'a [u8]) -> Result<Self, MarshalError> {
        let (sig_end, count) = parse_header(bytes)?;
        Ok(ArgsRef {
            bytes,
            sig_end,
            count,
        })
    }

    /// The whole encoding.
    ///
    /// ```
    /// use vsync::marshal::{ArgList, ArgsRef};
    /// let bytes = ArgList::new(&(5u32,)).into_bytes();
    /// assert_eq!(ArgsRef::parse(&bytes).unwrap().as_bytes(), &bytes[..]);
    /// ```
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// An owned copy.
    ///
    /// ```
    /// use vsync::marshal::{ArgList, ArgsRef};
    /// let bytes = ArgList::new(&(5u32,)).into_bytes();
    /// let owned: ArgList = ArgsRef::parse(&bytes).unwrap().to_arg_list();
    /// assert_eq!(owned.into_bytes(), bytes);
    /// ```
    pub fn to_arg_list(&self) -> ArgList {
        ArgList {
            bytes: self.bytes.to_vec(),
            sig_end: self.sig_end,
            count: self.count,
        }
    }

    /// The number of arguments.
    ///
    /// ```
    /// use vsync::marshal::{ArgList, ArgsRef};
    /// let bytes = ArgList::new(&(1u8, 2u8)).into_bytes();
    /// assert_eq!(ArgsRef::parse(&bytes).unwrap().len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if there are no arguments.
    ///
    /// ```
    /// use vsync::marshal::{ArgList, ArgsRef};
    /// let bytes = ArgList::empty().into_bytes();
    /// assert!(ArgsRef::parse(&bytes).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The signature code: argument count and type codes.
    ///
    /// ```
    /// use vsync::marshal::{ArgList, ArgsRef};
    /// let a = ArgList::new(&(1u8,));
    /// assert_eq!(ArgsRef::parse(a.as_bytes()).unwrap().signature_code(), a.signature_code());
    /// ```
    pub fn signature_code(&self) -> &'a [u8] {
        &self.bytes[1..self.sig_end]
    }

    /// The encoded values.
    ///
    /// ```
    /// use vsync::marshal::{ArgList, ArgsRef};
    /// let a = ArgList::new(&(1u8,));
    /// assert_eq!(ArgsRef::parse(a.as_bytes()).unwrap().values(), a.values());
    /// ```
    pub fn values(&self) -> &'a [u8] {
        &self.bytes[self.sig_end..]
    }

    /// The signature carried (user types appear by id only, e.g. `#1001`).
    ///
    /// ```
    /// use vsync::marshal::{ArgList, ArgsRef};
    /// let bytes = ArgList::new(&(1u8, "s")).into_bytes();
    /// assert_eq!(ArgsRef::parse(&bytes).unwrap().signature().to_string(), "(u8, String)");
    /// ```
    pub fn signature(&self) -> Signature {
        // Received lists were validated by `parse`; locally built ones come from
        // `write_type_code`, which only a faulty hand-written `Encode` gets wrong.
        Signature::read_code(&mut Reader::new(self.signature_code())).unwrap_or_default()
    }

    /// True if the list's signature is `A`'s.
    ///
    /// ```
    /// use vsync::marshal::{ArgList, ArgsRef};
    /// let bytes = ArgList::new(&(1u8,)).into_bytes();
    /// assert!(ArgsRef::parse(&bytes).unwrap().matches::<(u8,)>());
    /// ```
    pub fn matches<A: Args>(&self) -> bool {
        let mut m = CodeMatcher::new(self.signature_code());
        A::write_signature_code(&mut m);
        m.matched_all()
    }

    /// Decodes the arguments as `A`, after checking the signature; a mismatch names both
    /// signatures.
    ///
    /// ```
    /// use vsync::marshal::{ArgList, ArgsRef};
    /// let bytes = ArgList::new(&(1u8, true)).into_bytes();
    /// assert_eq!(ArgsRef::parse(&bytes).unwrap().decode::<(u8, bool)>().unwrap(), (1, true));
    /// ```
    pub fn decode<A: FromArgs>(&self) -> Result<A, MarshalError> {
        if !self.matches::<A>() {
            let expected = A::signature();
            let actual = self.signature().with_names_from([&expected]);
            return Err(MarshalError::signature_mismatch(expected, actual));
        }
        let mut r = Reader::new(self.values());
        let a = A::decode_values(&mut r)?;
        r.finish()?;
        Ok(a)
    }

    /// Decodes a single-argument list (typically a reply) as `T`.
    ///
    /// ```
    /// use vsync::marshal::{ArgList, ArgsRef};
    /// let bytes = ArgList::one(&42u64).into_bytes();
    /// assert_eq!(ArgsRef::parse(&bytes).unwrap().decode_one::<u64>().unwrap(), 42);
    /// ```
    pub fn decode_one<T: Marshal>(&self) -> Result<T, MarshalError> {
        self.decode::<(T,)>().map(|(t,)| t)
    }
}

impl<'a> From<&'a ArgList> for ArgsRef<'a> {
    fn from(a: &'a ArgList) -> Self {
        a.view()
    }
}

impl fmt::Debug for ArgsRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArgList")
            .field("signature", &format_args!("{}", self.signature()))
            .field("value_bytes", &self.values().len())
            .finish()
    }
}

/// Builds an [`ArgList`](crate::marshal::ArgList) from its arguments: `args!(a, b, c)` is
/// `ArgList::new(&(a, b, c))`.
///
/// ```
/// let a = vsync::args!("User number", 3i32);
/// assert_eq!(a.len(), 2);
/// assert!(vsync::args!().is_empty());
/// ```
#[macro_export]
macro_rules! args {
    () => {
        $crate::marshal::ArgList::empty()
    };
    ($($arg:expr),+ $(,)?) => {
        $crate::marshal::ArgList::new(&($($arg,)+))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let a = ArgList::new(&("ab", 1i32));
        assert_eq!(a.as_bytes(), [1, 2, 0x0f, 0x0a, 2, b'a', b'b', 2]);
        assert_eq!(a.signature_code(), [2, 0x0f, 0x0a]);
        assert_eq!(a.values(), [2, b'a', b'b', 2]);
        assert_eq!(ArgList::one(&"ab").as_bytes(), [1, 1, 0x0f, 2, b'a', b'b']);
        assert_eq!(ArgList::empty().as_bytes(), [1, 0]);
        assert_eq!(
            format!("{a:?}"),
            "ArgList { signature: (String, i32), value_bytes: 4 }"
        );
    }

    #[test]
    fn parse_rejects_bad_headers() {
        assert_eq!(
            ArgList::parse(&[2, 0]),
            Err(MarshalError::UnsupportedVersion(2))
        );
        assert!(ArgList::parse(&[]).is_err());
        assert_eq!(
            ArgList::parse(&[1, 1, 0xee]),
            Err(MarshalError::UnknownTypeCode(0xee))
        );
        // Values are checked at decode time, including trailing bytes.
        let mut b = ArgList::new(&(1u8,)).into_bytes();
        b.push(0);
        let a = ArgList::from_bytes(b).unwrap();
        assert_eq!(a.decode::<(u8,)>(), Err(MarshalError::TrailingBytes(1)));
    }

    #[test]
    fn views_decode_in_place() {
        let a = ArgList::new(&(7u32, "x"));
        let bytes = a.as_bytes().to_vec();
        let v = ArgsRef::parse(&bytes).unwrap();
        assert_eq!(v, a.view());
        assert_eq!(v.to_arg_list(), a);
        assert_eq!(v.len(), 2);
        assert_eq!(v.decode::<(u32, String)>().unwrap(), (7, "x".into()));
        assert_eq!(
            ArgsRef::parse(&[1, 3, 0x0a]).map(|v| v.len()),
            Err(MarshalError::Truncated {
                needed: 1,
                remaining: 0
            })
        );
    }

    #[test]
    fn borrowed_and_owned_agree() {
        let s = String::from("x");
        let v = vec![1u16, 2];
        let borrowed = ArgList::new(&(s.as_str(), v.as_slice(), &s));
        let owned = ArgList::new(&(s.clone(), v.clone(), s.clone()));
        assert_eq!(borrowed, owned);
        assert_eq!(
            borrowed.decode::<(String, Vec<u16>, String)>().unwrap(),
            (s.clone(), v, s)
        );
        assert!(ArgList::empty().decode::<()>().is_ok());
    }
}
