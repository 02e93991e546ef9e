//! [`Handlers`]: request handlers keyed by request code *and* argument signature.
//!
//! Several handlers may share a code when their signatures differ (the manual's polymorphic
//! `UPDATE`); an incoming [`ArgList`] (or borrowed [`ArgsRef`]) runs every handler whose code
//! and signature match, in registration order. A handler is a closure over typed arguments
//! and may return a reply value (anything [`Encode`], or a [`Reply`]) or `()`.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use vsync::args;
//! use vsync::marshal::{Handlers, Reply};
//!
//! const UPDATE: u32 = 1;
//! const LOOKUP: u32 = 2;
//! let log = Arc::new(Mutex::new(Vec::new()));
//! let mut h = Handlers::new();
//! let l = log.clone();
//! h.on(UPDATE, move |name: String, val: i32| l.lock().unwrap().push(format!("{name}={val}")));
//! let l = log.clone();
//! h.on(UPDATE, move |id: i32, val: i32| l.lock().unwrap().push(format!("#{id}={val}")));
//! h.on(LOOKUP, |who: String| who.len() as i32);
//!
//! h.dispatch(UPDATE, &args!("User number 1", 100)).unwrap();
//! h.dispatch(UPDATE, &args!(11, 1100)).unwrap();
//! assert_eq!(*log.lock().unwrap(), ["User number 1=100", "#11=1100"]);
//!
//! let Reply::Value(r) = h.dispatch(LOOKUP, &args!("John Smith")).unwrap() else { panic!() };
//! assert_eq!(r.decode_one::<i32>().unwrap(), 10);
//!
//! let err = h.dispatch(UPDATE, &args!("x", 1i64)).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "no handler for request code 1 takes (String, i64); its handlers take (String, i32) or (i32, i32)"
//! );
//! ```

use std::collections::BTreeMap;
use std::fmt;

use super::args::{ArgList, Args, ArgsRef, FromArgs};
use super::desc::Signature;
use super::error::MarshalError;
use super::registry::{RegistryError, TypeRegistry};
use super::signature::SignatureSet;
use super::traits::{Encode, Marshal};
use super::wire::Reader;

/// A request code (the manual's request id: `UPDATE`, `LOOKUP`, ...).
///
/// ```
/// use vsync::marshal::{Handlers, RequestCode};
/// const UPDATE: RequestCode = 0;
/// const LOOKUP: RequestCode = 1;
/// let mut h = Handlers::new();
/// h.on(UPDATE, |_n: i32| {}).on(LOOKUP, |n: i32| n);
/// assert_eq!(h.codes().collect::<Vec<_>>(), [UPDATE, LOOKUP]);
/// ```
pub type RequestCode = u32;

/// What a handler answered.
///
/// ```
/// use vsync::marshal::Reply;
/// let r = Reply::value(&7i32);
/// let Reply::Value(args) = r else { unreachable!() };
/// assert_eq!(args.decode_one::<i32>().unwrap(), 7);
/// assert!(matches!(Reply::abort("no"), Reply::Abort(s) if s == "no"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// No reply (the manual's `NullReply`).
    None,
    /// A reply value, marshalled.
    Value(ArgList),
    /// The manual's `AbortReply(reason)`: the query fails at the caller with this reason.
    Abort(String),
}

impl Reply {
    /// A reply carrying the single value `v`.
    ///
    /// ```
    /// use vsync::marshal::Reply;
    /// let Reply::Value(a) = Reply::value("text") else { unreachable!() };
    /// assert_eq!(a.signature().to_string(), "(String)");
    /// ```
    pub fn value<T: Encode + ?Sized>(v: &T) -> Reply {
        Reply::Value(ArgList::one(v))
    }

    /// A reply carrying several values.
    ///
    /// ```
    /// use vsync::marshal::Reply;
    /// let Reply::Value(a) = Reply::args(&(vec![1i32, 3], 0u8)) else { unreachable!() };
    /// assert_eq!(a.signature().to_string(), "(Vec<i32>, u8)");
    /// ```
    pub fn args<A: Args>(a: &A) -> Reply {
        Reply::Value(ArgList::new(a))
    }

    /// An abort with a reason.
    ///
    /// ```
    /// use vsync::marshal::{ArgList, Handlers, Reply};
    /// let mut h = Handlers::new();
    /// h.on(0, |n: i32| if n < 0 { Reply::abort("negative") } else { Reply::value(&n) });
    /// let r = h.dispatch(0, &ArgList::new(&(-1i32,))).unwrap();
    /// assert!(matches!(r, Reply::Abort(reason) if reason == "negative"));
    /// ```
    pub fn abort(reason: impl Into<String>) -> Reply {
        Reply::Abort(reason.into())
    }
}

/// What a handler closure may return: `()` (no reply), a [`Reply`], or any [`Encode`] value
/// (a single-value reply).
///
/// ```
/// use vsync::marshal::{IntoReply, Reply};
/// assert!(matches!(().into_reply(), Reply::None));
/// assert!(matches!(5u8.into_reply(), Reply::Value(_)));
/// assert!(matches!(Reply::abort("x").into_reply(), Reply::Abort(_)));
/// ```
pub trait IntoReply {
    /// Converts into a reply.
    ///
    /// ```
    /// use vsync::marshal::{IntoReply, Reply};
    /// let Reply::Value(a) = 42i32.into_reply() else { unreachable!() };
    /// assert_eq!(a.decode_one::<i32>().unwrap(), 42);
    /// ```
    fn into_reply(self) -> Reply;
}

impl IntoReply for () {
    fn into_reply(self) -> Reply {
        Reply::None
    }
}

impl IntoReply for Reply {
    fn into_reply(self) -> Reply {
        self
    }
}

impl<T: Encode> IntoReply for T {
    fn into_reply(self) -> Reply {
        Reply::value(&self)
    }
}

/// A closure usable as a handler: `FnMut(A, B, ...) -> R` with 0 to 12 [`Marshal`]
/// arguments and `R:` [`IntoReply`]. `Args` is the argument tuple.
///
/// ```
/// use vsync::marshal::{Handler, Handlers};
/// fn register<A, R>(h: &mut Handlers, f: impl Handler<A, R>) {
///     h.on(7, f);
/// }
/// let mut h = Handlers::new();
/// register(&mut h, |a: String, b: u64| format!("{a}{b}"));
/// assert_eq!(h.signatures(7)[0].to_string(), "(String, u64)");
/// ```
pub trait Handler<Args, R>: Send + 'static {
    /// The argument signature.
    ///
    /// ```
    /// use vsync::marshal::Handler;
    /// fn sig<A, R, H: Handler<A, R>>(_: &H) -> String {
    ///     H::signature().to_string()
    /// }
    /// assert_eq!(sig(&|_name: String, _n: i32| {}), "(String, i32)");
    /// ```
    fn signature() -> Signature;

    /// The signature code the handler accepts.
    ///
    /// ```
    /// use vsync::marshal::{Args, Handler};
    /// fn code<A, R, H: Handler<A, R>>(_: &H) -> Vec<u8> {
    ///     H::signature_code()
    /// }
    /// let mut expected = Vec::new();
    /// <(u64,)>::write_signature_code(&mut expected);
    /// assert_eq!(code(&|_n: u64| {}), expected);
    /// ```
    fn signature_code() -> Vec<u8>;

    /// Decodes the arguments from `r` (which must hold exactly them) and runs the handler.
    ///
    /// ```
    /// use vsync::marshal::{Args, Handler, Reader, Reply, Writer};
    /// let mut w = Writer::new();
    /// (20u64, 22u64).encode_values(&mut w);
    /// let bytes = w.into_vec();
    /// let mut add = |a: u64, b: u64| a + b;
    /// let reply = Handler::call(&mut add, &mut Reader::new(&bytes)).unwrap();
    /// assert!(matches!(reply, Reply::Value(_)));
    /// ```
    fn call(&mut self, r: &mut Reader<'_>) -> Result<Reply, MarshalError>;
}

macro_rules! handler_arity {
    ($($t:ident $v:ident),*) => {
        impl<Func, R, $($t),*> Handler<($($t,)*), R> for Func
        where
            Func: FnMut($($t),*) -> R + Send + 'static,
            R: IntoReply,
            $($t: Marshal,)*
        {
            fn signature() -> Signature {
                <($($t,)*) as Args>::signature()
            }

            fn signature_code() -> Vec<u8> {
                let mut v = Vec::new();
                <($($t,)*) as Args>::write_signature_code(&mut v);
                v
            }

            #[allow(unused_variables)]
            fn call(&mut self, r: &mut Reader<'_>) -> Result<Reply, MarshalError> {
                let ($($v,)*) = <($($t,)*) as FromArgs>::decode_values(r)?;
                r.finish()?;
                Ok(self($($v),*).into_reply())
            }
        }
    };
}

handler_arity!();
handler_arity!(A a);
handler_arity!(A a, B b);
handler_arity!(A a, B b, C c);
handler_arity!(A a, B b, C c, D d);
handler_arity!(A a, B b, C c, D d, E e);
handler_arity!(A a, B b, C c, D d, E e, F f);
handler_arity!(A a, B b, C c, D d, E e, F f, G g);
handler_arity!(A a, B b, C c, D d, E e, F f, G g, H h);
handler_arity!(A a, B b, C c, D d, E e, F f, G g, H h, I i);
handler_arity!(A a, B b, C c, D d, E e, F f, G g, H h, I i, J j);
handler_arity!(A a, B b, C c, D d, E e, F f, G g, H h, I i, J j, K k);
handler_arity!(A a, B b, C c, D d, E e, F f, G g, H h, I i, J j, K k, L l);

type Callback = Box<dyn FnMut(&mut Reader<'_>) -> Result<Reply, MarshalError> + Send>;

struct Entry {
    signature: Signature,
    code: Vec<u8>,
    call: Callback,
}

/// Why an argument list could not be dispatched (or would not be accepted).
///
/// ```
/// use vsync::marshal::{ArgList, DispatchError, Handlers};
/// let mut h = Handlers::new();
/// h.on(0, |_n: i32| {});
/// let e = h.dispatch(5, &ArgList::new(&(1i32,))).unwrap_err();
/// assert!(matches!(e, DispatchError::UnknownCode { code: 5, .. }));
/// let e = h.dispatch(0, &ArgList::new(&(1i64,))).unwrap_err();
/// assert!(matches!(e, DispatchError::NoMatchingSignature { .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DispatchError {
    /// No handler has this request code.
    UnknownCode {
        /// The code.
        code: RequestCode,
        /// The codes that have handlers.
        known: Vec<RequestCode>,
    },
    /// Handlers exist for the code, but none takes these arguments.
    NoMatchingSignature {
        /// The code.
        code: RequestCode,
        /// The signature the arguments have.
        actual: Signature,
        /// The signatures the code's handlers take.
        expected: Vec<Signature>,
    },
    /// The signature matched but the values did not decode.
    Malformed {
        /// The code.
        code: RequestCode,
        /// The matched signature.
        signature: Signature,
        /// The decoding error.
        error: MarshalError,
    },
}

impl fmt::Display for DispatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DispatchError::UnknownCode { code, known } => {
                write!(f, "no handler for request code {code}")?;
                if known.is_empty() {
                    f.write_str(" (no handlers registered)")
                } else {
                    let list: Vec<String> = known.iter().map(|c| c.to_string()).collect();
                    write!(f, " (codes with handlers: {})", list.join(", "))
                }
            }
            DispatchError::NoMatchingSignature {
                code,
                actual,
                expected,
            } => {
                let list: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
                write!(
                    f,
                    "no handler for request code {code} takes {actual}; its handlers take {}",
                    list.join(" or ")
                )
            }
            DispatchError::Malformed {
                code,
                signature,
                error,
            } => write!(
                f,
                "malformed arguments for request code {code} {signature}: {error}"
            ),
        }
    }
}

impl std::error::Error for DispatchError {}

/// A dispatch table of typed handlers keyed by request code and signature.
///
/// ```
/// use vsync::marshal::{ArgList, Handlers, Reply};
/// let mut h = Handlers::new();
/// h.on(0, |a: i32, b: i32| a + b);
/// let Reply::Value(sum) = h.dispatch(0, &ArgList::new(&(2i32, 3i32))).unwrap() else { panic!() };
/// assert_eq!(sum.decode_one::<i32>().unwrap(), 5);
/// ```
#[derive(Default)]
pub struct Handlers {
    table: BTreeMap<RequestCode, Vec<Entry>>,
}

impl Handlers {
    /// An empty table.
    ///
    /// ```
    /// use vsync::marshal::Handlers;
    /// assert!(Handlers::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `code`; its argument types are its signature. Handlers with
    /// the same code and the same signature all run, in registration order.
    ///
    /// ```
    /// use vsync::marshal::Handlers;
    /// let mut h = Handlers::new();
    /// h.on(0, |_x: i32| {}).on(0, |_s: String| {}); // one code, two signatures
    /// assert_eq!(h.len(), 2);
    /// ```
    pub fn on<A, R, H: Handler<A, R>>(&mut self, code: RequestCode, mut handler: H) -> &mut Self {
        self.table.entry(code).or_default().push(Entry {
            signature: H::signature(),
            code: H::signature_code(),
            call: Box::new(move |r| handler.call(r)),
        });
        self
    }

    fn find(&self, code: RequestCode, sig_code: &[u8]) -> Result<(), DispatchError> {
        let entries = self
            .table
            .get(&code)
            .ok_or_else(|| DispatchError::UnknownCode {
                code,
                known: self.table.keys().copied().collect(),
            })?;
        if entries.iter().any(|e| e.code == sig_code) {
            return Ok(());
        }
        let expected = self.signatures(code);
        let actual = Signature::read_code(&mut Reader::new(sig_code))
            .unwrap_or_default()
            .with_names_from(expected.iter());
        Err(DispatchError::NoMatchingSignature {
            code,
            actual,
            expected,
        })
    }

    /// Runs every handler registered for `code` whose signature is `args`'s, and returns the
    /// first reply that is not [`Reply::None`] (the manual expects one handler per request).
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use vsync::marshal::{ArgList, Handlers, Reply};
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let s = seen.clone();
    /// let mut h = Handlers::new();
    /// h.on(0, move |n: u8| s.lock().unwrap().push(n));
    /// assert!(matches!(h.dispatch(0, &ArgList::new(&(4u8,))).unwrap(), Reply::None));
    /// assert_eq!(*seen.lock().unwrap(), [4]);
    /// ```
    pub fn dispatch<'a>(
        &mut self,
        code: RequestCode,
        args: impl Into<ArgsRef<'a>>,
    ) -> Result<Reply, DispatchError> {
        let args = args.into();
        self.find(code, args.signature_code())?;
        let mut reply = Reply::None;
        let entries = self.table.get_mut(&code).into_iter().flatten();
        for e in entries.filter(|e| e.code == args.signature_code()) {
            let mut r = Reader::new(args.values());
            let this = (e.call)(&mut r).map_err(|error| DispatchError::Malformed {
                code,
                signature: e.signature.clone(),
                error,
            })?;
            if matches!(reply, Reply::None) {
                reply = this;
            }
        }
        Ok(reply)
    }

    /// Checks, without running anything, that a handler for `code` accepts `args` — the
    /// sender-side check, whose error names the signatures expected.
    ///
    /// ```
    /// use vsync::marshal::{ArgList, Handlers};
    /// let mut h = Handlers::new();
    /// h.on(0, |_n: i32| {});
    /// assert!(h.check(0, &ArgList::new(&(1i32,))).is_ok());
    /// assert!(h.check(0, &ArgList::new(&("one",))).is_err());
    /// ```
    pub fn check<'a>(
        &self,
        code: RequestCode,
        args: impl Into<ArgsRef<'a>>,
    ) -> Result<(), DispatchError> {
        self.find(code, args.into().signature_code())
    }

    /// Like [`Handlers::check`] for the argument types `A`, before encoding anything.
    ///
    /// ```
    /// use vsync::marshal::Handlers;
    /// let mut h = Handlers::new();
    /// h.on(0, |rank: i32, n: i32| {});
    /// assert!(h.check_args::<(i32, i32)>(0).is_ok());
    /// assert!(h.check_args::<(&str, i32)>(0).is_err());
    /// ```
    pub fn check_args<A: Args>(&self, code: RequestCode) -> Result<(), DispatchError> {
        let mut sig = Vec::new();
        A::write_signature_code(&mut sig);
        self.find(code, &sig)
    }

    /// The codes that have handlers, ascending.
    ///
    /// ```
    /// use vsync::marshal::Handlers;
    /// let mut h = Handlers::new();
    /// h.on(9, |_n: i32| {}).on(2, |_n: i32| {});
    /// assert_eq!(h.codes().collect::<Vec<_>>(), [2, 9]);
    /// ```
    pub fn codes(&self) -> impl Iterator<Item = RequestCode> + '_ {
        self.table.keys().copied()
    }

    /// The signatures of `code`'s handlers, in registration order (repeated if registered
    /// repeatedly).
    ///
    /// ```
    /// use vsync::marshal::Handlers;
    /// let mut h = Handlers::new();
    /// h.on(0, |_n: i32| {}).on(0, |_s: String, _b: bool| {});
    /// let sigs: Vec<String> = h.signatures(0).iter().map(|s| s.to_string()).collect();
    /// assert_eq!(sigs, ["(i32)", "(String, bool)"]);
    /// ```
    pub fn signatures(&self, code: RequestCode) -> Vec<Signature> {
        self.table
            .get(&code)
            .map(|es| es.iter().map(|e| e.signature.clone()).collect())
            .unwrap_or_default()
    }

    /// Every `(code, signature)` pair, by code then registration order.
    ///
    /// ```
    /// use vsync::marshal::Handlers;
    /// let mut h = Handlers::new();
    /// h.on(1, |_n: i32| {}).on(0, |_n: u8| {});
    /// let pairs: Vec<(u32, String)> = h.iter().map(|(c, s)| (c, s.to_string())).collect();
    /// assert_eq!(pairs, [(0, "(u8)".to_string()), (1, "(i32)".to_string())]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (RequestCode, &Signature)> + '_ {
        self.table
            .iter()
            .flat_map(|(c, es)| es.iter().map(move |e| (*c, &e.signature)))
    }

    /// The number of handlers.
    ///
    /// ```
    /// use vsync::marshal::Handlers;
    /// let mut h = Handlers::new();
    /// h.on(0, |_n: i32| {}).on(0, |_n: i32| {}); // same signature twice: both run
    /// assert_eq!(h.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.table.values().map(Vec::len).sum()
    }

    /// True if no handler is registered.
    ///
    /// ```
    /// use vsync::marshal::Handlers;
    /// let mut h = Handlers::new();
    /// assert!(h.is_empty());
    /// h.on(0, || {});
    /// assert!(!h.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The table's [`SignatureSet`] (what a joiner sends), checking that every user type in
    /// a signature is registered in `registry` with the same definition.
    ///
    /// ```
    /// use vsync::marshal::{Handlers, TypeRegistry};
    /// let mut h = Handlers::new();
    /// h.on(0, |_n: i32| {});
    /// let set = h.signature_set(&TypeRegistry::new()).unwrap();
    /// assert_eq!(set.codes().collect::<Vec<_>>(), [0]);
    /// ```
    pub fn signature_set(&self, registry: &TypeRegistry) -> Result<SignatureSet, RegistryError> {
        SignatureSet::from_handlers(self, registry)
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (code, es) in &self.table {
            let sigs: Vec<String> = es.iter().map(|e| e.signature.to_string()).collect();
            m.entry(code, &sigs);
        }
        m.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args;

    #[test]
    fn zero_and_many_arguments() {
        let mut h = Handlers::new();
        h.on(5, || 42u8);
        h.on(
            6,
            |a: u8, b: u16, c: u32, d: u64, e: i8, f: i16, g: i32, h: i64| {
                a as i64 + b as i64 + c as i64 + d as i64 + e as i64 + f as i64 + g as i64 + h
            },
        );
        let Reply::Value(r) = h.dispatch(5, &args!()).unwrap() else {
            panic!()
        };
        assert_eq!(r.decode_one::<u8>().unwrap(), 42);
        let a = args!(1u8, 2u16, 3u32, 4u64, 5i8, 6i16, 7i32, 8i64);
        let Reply::Value(r) = h.dispatch(6, &a).unwrap() else {
            panic!()
        };
        assert_eq!(r.decode_one::<i64>().unwrap(), 36);
        assert_eq!(h.len(), 2);
        assert_eq!(h.codes().collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn unknown_code_and_malformed() {
        let mut h = Handlers::new();
        h.on(1, |_: String| {});
        let e = h.dispatch(9, &args!(1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no handler for request code 9 (codes with handlers: 1)"
        );
        // Right signature, truncated value.
        let mut b = args!("abc").into_bytes();
        b.pop();
        let a = ArgList::from_bytes(b).unwrap();
        let e = h.dispatch(1, &a).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("malformed arguments for request code 1 (String): input truncated"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_signatures_all_run_first_reply_wins() {
        let mut h = Handlers::new();
        let mut count = 0;
        h.on(1, |x: i32| x * 2);
        h.on(1, |_x: i32| Reply::None);
        h.on(1, move |x: i32| {
            count += 1;
            Reply::abort(format!("{x} {count}"))
        });
        let Reply::Value(r) = h.dispatch(1, &args!(4)).unwrap() else {
            panic!()
        };
        assert_eq!(r.decode_one::<i32>().unwrap(), 8);
        assert_eq!(format!("{h:?}"), r#"{1: ["(i32)", "(i32)", "(i32)"]}"#);
    }

    #[test]
    fn handlers_are_send() {
        fn is_send<T: Send>(_: &T) {}
        is_send(&Handlers::new());
    }
}
