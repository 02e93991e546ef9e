//! Group agreement on handler signatures: a [`SignatureSet`] is everything a member must
//! agree on — for each request code the set of handler signatures, and the definition of
//! every user type reachable from them (deeply, through fields of fields). A joiner sends
//! its set; [`compare`] tells exactly what differs, and [`SignatureSet::digest`] gives a
//! cheap order-independent fingerprint to compare first.
//!
//! Canonical encoding (also the `Marshal` encoding; the digest is xxh3-64 of it):
//!
//! ```text
//! version: u8 (= 1)
//! codes:   varint n, then per code (ascending):
//!              code: varint, sigs: varint m (≥ 1), then m signature codes
//!              (count + type codes), ascending by their bytes, no duplicates
//! types:   varint k, then per user type (ascending id):
//!              id: varint, name: varint length + UTF-8, shape (field types as type codes)
//! ```
//!
//! Every user type referenced must be defined, every definition must be reachable from a
//! signature, and names are unique: one set, one byte string, one digest.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use super::desc::{read_name, write_name, Shape, Signature, TypeDesc, TypeId, UserType};
use super::error::MarshalError;
use super::handlers::{Handlers, RequestCode};
use super::registry::{definition_bytes, reachable_definitions, RegistryError, TypeRegistry};
use super::traits::{Encode, Marshal};
use super::user::describe_user;
use super::wire::{CodeSink, Reader, Writer};

/// The `SignatureSet` format version.
///
/// ```
/// use vsync::marshal::{Encode, SignatureSet, SIGNATURE_SET_VERSION};
/// assert_eq!(SignatureSet::new().to_bytes()[0], SIGNATURE_SET_VERSION);
/// ```
pub const SIGNATURE_SET_VERSION: u8 = 1;

/// The type id of [`SignatureSet`] itself (reserved range).
///
/// ```
/// use vsync::marshal::{Encode, TypeDesc, SignatureSet, SIGNATURE_SET_TYPE_ID};
/// let desc = SignatureSet::type_desc();
/// assert!(matches!(desc, TypeDesc::User(u) if u.id == SIGNATURE_SET_TYPE_ID));
/// ```
pub const SIGNATURE_SET_TYPE_ID: TypeId = 0xffff_0001;

/// Most user-type definitions expanded when rendering one signature deeply.
const EXPAND_BUDGET: usize = 4096;

/// The handler signatures and user-type definitions a group's members must agree on.
///
/// ```
/// use vsync::marshal::{compare, Encode, Handlers, Marshal, SignatureSet, TypeRegistry};
///
/// let mut h = Handlers::new();
/// h.on(0, |rank: i32, n: i32| {});
/// h.on(1, |arg: i32| Vec::<i32>::new());
/// let set = h.signature_set(&TypeRegistry::new()).unwrap();
///
/// // It travels in a join request and compares equal on arrival.
/// let arrived = SignatureSet::from_bytes(&set.to_bytes()).unwrap();
/// assert_eq!(arrived.digest(), set.digest());
/// assert!(compare(&set, &arrived).is_ok());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignatureSet {
    /// code -> (signature code bytes -> shallow signature with names)
    handlers: BTreeMap<RequestCode, BTreeMap<Vec<u8>, Signature>>,
    /// id -> definition (field types shallow, with names)
    types: BTreeMap<TypeId, Arc<UserType>>,
}

impl SignatureSet {
    /// An empty set.
    ///
    /// ```
    /// use vsync::marshal::SignatureSet;
    /// assert!(SignatureSet::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The set of a handler table; every user type used must be registered in `registry`
    /// with the same definition.
    ///
    /// ```
    /// use vsync::marshal::{Handlers, SignatureSet, TypeRegistry};
    /// let mut h = Handlers::new();
    /// h.on(0, |_n: i32| {});
    /// let set = SignatureSet::from_handlers(&h, &TypeRegistry::new()).unwrap();
    /// assert_eq!(set.len(), 1);
    /// ```
    pub fn from_handlers(
        handlers: &Handlers,
        registry: &TypeRegistry,
    ) -> Result<Self, RegistryError> {
        let mut set = SignatureSet::new();
        for (code, sig) in handlers.iter() {
            let used_in = format!("request code {code} {sig}");
            for t in sig.types() {
                registry.check(t, &used_in)?;
            }
            set.add(code, sig)?;
        }
        Ok(set)
    }

    /// Adds one handler signature (a deep one, as [`Handlers`] and
    /// [`Args::signature`](super::Args::signature) produce). Fails if a user type in it
    /// conflicts with one already in the set.
    ///
    /// ```
    /// use vsync::marshal::{Args, SignatureSet};
    /// let mut set = SignatureSet::new();
    /// set.add(3, &<(i32, String)>::signature()).unwrap();
    /// assert_eq!(set.signatures(3)[0].to_string(), "(i32, String)");
    /// ```
    pub fn add(&mut self, code: RequestCode, sig: &Signature) -> Result<(), RegistryError> {
        let mut defs = Vec::new();
        for t in sig.types() {
            reachable_definitions(t, &mut defs);
        }
        let mut types = self.types.clone();
        for d in defs {
            insert_type(&mut types, d)?;
        }
        self.types = types;
        let shallow = Signature(sig.types().iter().map(TypeDesc::shallow).collect());
        self.handlers
            .entry(code)
            .or_default()
            .insert(sig.code(), shallow);
        Ok(())
    }

    /// The codes present, ascending.
    ///
    /// ```
    /// use vsync::marshal::{Args, SignatureSet};
    /// let mut set = SignatureSet::new();
    /// set.add(5, &<(u8,)>::signature()).unwrap();
    /// set.add(1, &<(u8,)>::signature()).unwrap();
    /// assert_eq!(set.codes().collect::<Vec<_>>(), [1, 5]);
    /// ```
    pub fn codes(&self) -> impl Iterator<Item = RequestCode> + '_ {
        self.handlers.keys().copied()
    }

    /// The distinct signatures for `code`, with user types expanded to their definitions
    /// (canonical order).
    ///
    /// ```
    /// use vsync::marshal::{Args, SignatureSet};
    /// let mut set = SignatureSet::new();
    /// set.add(0, &<(u8,)>::signature()).unwrap();
    /// set.add(0, &<(u8,)>::signature()).unwrap(); // distinct signatures only
    /// assert_eq!(set.signatures(0).len(), 1);
    /// ```
    pub fn signatures(&self, code: RequestCode) -> Vec<Signature> {
        self.handlers
            .get(&code)
            .map(|m| m.values().map(|s| self.expand(s)).collect())
            .unwrap_or_default()
    }

    /// The user-type definitions, by id (field types are references).
    ///
    /// ```
    /// use vsync::marshal::{Args, SignatureSet};
    /// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
    /// let mut set = SignatureSet::new();
    /// set.add(0, &<(Pt,)>::signature()).unwrap();
    /// assert_eq!(set.types().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["Pt"]);
    /// ```
    pub fn types(&self) -> impl Iterator<Item = &Arc<UserType>> {
        self.types.values()
    }

    /// The number of distinct (code, signature) pairs.
    ///
    /// ```
    /// use vsync::marshal::{Args, SignatureSet};
    /// let mut set = SignatureSet::new();
    /// set.add(0, &<(u8,)>::signature()).unwrap();
    /// set.add(0, &<(i8,)>::signature()).unwrap();
    /// assert_eq!(set.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.handlers.values().map(BTreeMap::len).sum()
    }

    /// True if the set is empty.
    ///
    /// ```
    /// use vsync::marshal::SignatureSet;
    /// assert!(SignatureSet::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// An order-independent 64-bit fingerprint: xxh3-64 of the canonical encoding. Equal
    /// sets have equal digests whatever the registration order.
    ///
    /// ```
    /// use vsync::marshal::{Args, SignatureSet};
    /// let (mut a, mut b) = (SignatureSet::new(), SignatureSet::new());
    /// a.add(0, &<(u8,)>::signature()).unwrap();
    /// a.add(1, &<(i8,)>::signature()).unwrap();
    /// b.add(1, &<(i8,)>::signature()).unwrap();
    /// b.add(0, &<(u8,)>::signature()).unwrap();
    /// assert_eq!(a.digest(), b.digest()); // the order of registration does not matter
    /// ```
    pub fn digest(&self) -> u64 {
        xxh3_64(&self.to_bytes())
    }

    /// `sig` with its user types expanded to their definitions (recursion and very large
    /// expansions stay as references).
    fn expand(&self, sig: &Signature) -> Signature {
        let mut budget = EXPAND_BUDGET;
        let mut stack = Vec::new();
        Signature(
            sig.types()
                .iter()
                .map(|t| expand(t, &self.types, &mut stack, &mut budget))
                .collect(),
        )
    }

    /// The ids reachable from `sig` through the definitions.
    fn reachable(&self, sig: &Signature) -> BTreeSet<TypeId> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<TypeId> = Vec::new();
        for t in sig.types() {
            t.visit_users(&mut |u| todo.push(u.id));
        }
        while let Some(id) = todo.pop() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(shape) = self.types.get(&id).and_then(|d| d.shape.as_ref()) {
                shape.for_each_type(&mut |t| t.visit_users(&mut |u| todo.push(u.id)));
            }
        }
        seen
    }
}

fn insert_type(
    types: &mut BTreeMap<TypeId, Arc<UserType>>,
    d: Arc<UserType>,
) -> Result<(), RegistryError> {
    if let Some(existing) = types.get(&d.id) {
        if definition_bytes(existing) != definition_bytes(&d) {
            return Err(RegistryError::DuplicateId {
                existing: existing.clone(),
                new: d,
            });
        }
        return Ok(());
    }
    if let Some(other) = types.values().find(|t| t.name == d.name) {
        return Err(RegistryError::DuplicateName {
            name: d.name.clone(),
            existing: other.id,
            new: d.id,
        });
    }
    types.insert(d.id, d);
    Ok(())
}

fn expand(
    t: &TypeDesc,
    types: &BTreeMap<TypeId, Arc<UserType>>,
    stack: &mut Vec<TypeId>,
    budget: &mut usize,
) -> TypeDesc {
    t.map_users(&mut |u| {
        let def = match types.get(&u.id) {
            Some(d) if *budget > 0 && !stack.contains(&u.id) => d,
            _ => return TypeDesc::user(UserType::reference(&u.name, u.id)),
        };
        *budget -= 1;
        stack.push(u.id);
        let shape = def
            .shape
            .as_ref()
            .map(|s| s.map_types(&mut |ft| expand(ft, types, stack, budget)));
        stack.pop();
        TypeDesc::user(UserType {
            name: def.name.clone(),
            id: def.id,
            shape,
        })
    })
}

impl Encode for SignatureSet {
    fn type_desc() -> TypeDesc {
        describe_user("vsync.SignatureSet", SIGNATURE_SET_TYPE_ID, || {
            Shape::Opaque(format!("v{SIGNATURE_SET_VERSION}"))
        })
    }

    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        super::user::__private::write_user_code(s, SIGNATURE_SET_TYPE_ID)
    }

    fn encode(&self, w: &mut Writer) {
        w.put_u8(SIGNATURE_SET_VERSION);
        w.put_len(self.handlers.len());
        for (code, sigs) in &self.handlers {
            w.put_varint(*code as u64);
            w.put_len(sigs.len());
            for code_bytes in sigs.keys() {
                w.put_bytes(code_bytes);
            }
        }
        w.put_len(self.types.len());
        for d in self.types.values() {
            w.put_varint(d.id as u64);
            write_name(w, &d.name);
            if let Some(s) = &d.shape {
                s.write(w);
            }
        }
    }
}

impl Marshal for SignatureSet {
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        let v = r.get_u8()?;
        if v != SIGNATURE_SET_VERSION {
            return Err(MarshalError::UnsupportedVersion(v));
        }
        let mut raw: BTreeMap<RequestCode, BTreeMap<Vec<u8>, Signature>> = BTreeMap::new();
        let n = r.get_len()?;
        let mut last_code = None;
        for _ in 0..n {
            let code = RequestCode::try_from(r.get_varint()?)
                .map_err(|_| MarshalError::OutOfRange("request code"))?;
            if last_code.is_some_and(|c| c >= code) {
                return Err(MarshalError::NonCanonical("request codes not ascending"));
            }
            last_code = Some(code);
            let m = r.get_len()?;
            if m == 0 {
                return Err(MarshalError::NonCanonical(
                    "request code without signatures",
                ));
            }
            let sigs = raw.entry(code).or_default();
            for _ in 0..m {
                let start = r.position();
                let rest = r.rest();
                let sig = Signature::read_code(r)?;
                let bytes = rest[..r.position() - start].to_vec();
                if sigs.keys().next_back().is_some_and(|last| *last >= bytes) {
                    return Err(MarshalError::NonCanonical("signatures not ascending"));
                }
                sigs.insert(bytes, sig);
            }
        }
        let mut types: BTreeMap<TypeId, Arc<UserType>> = BTreeMap::new();
        let mut names = BTreeSet::new();
        let k = r.get_len()?;
        for _ in 0..k {
            let id = TypeId::try_from(r.get_varint()?)
                .map_err(|_| MarshalError::OutOfRange("type id"))?;
            if types.keys().next_back().is_some_and(|&last| last >= id) {
                return Err(MarshalError::NonCanonical("type ids not ascending"));
            }
            let name = read_name(r)?;
            if !names.insert(name.clone()) {
                return Err(MarshalError::NonCanonical("type name defined twice"));
            }
            let shape = Shape::read(r)?;
            types.insert(id, Arc::new(UserType::new(&name, id, shape)));
        }
        // Resolve reference names; every reference must be defined.
        let mut undefined = false;
        let names_of: BTreeMap<TypeId, String> =
            types.iter().map(|(id, d)| (*id, d.name.clone())).collect();
        let mut resolve = |u: &Arc<UserType>| match names_of.get(&u.id) {
            Some(n) => TypeDesc::user(UserType::reference(n, u.id)),
            None => {
                undefined = true;
                TypeDesc::User(u.clone())
            }
        };
        let handlers: BTreeMap<_, _> = raw
            .into_iter()
            .map(|(c, sigs)| {
                let sigs = sigs
                    .into_iter()
                    .map(|(b, s)| (b, s.map_users(&mut resolve)))
                    .collect::<BTreeMap<_, _>>();
                (c, sigs)
            })
            .collect();
        let types: BTreeMap<_, _> = types
            .into_iter()
            .map(|(id, d)| {
                let shape = d
                    .shape
                    .as_ref()
                    .map(|s| s.map_types(&mut |t| t.map_users(&mut resolve)));
                (
                    id,
                    Arc::new(UserType {
                        name: d.name.clone(),
                        id,
                        shape,
                    }),
                )
            })
            .collect();
        if undefined {
            return Err(MarshalError::NonCanonical("reference to an undefined type"));
        }
        let set = SignatureSet { handlers, types };
        let mut reachable = BTreeSet::new();
        for sigs in set.handlers.values() {
            for s in sigs.values() {
                reachable.extend(set.reachable(s));
            }
        }
        if reachable.len() != set.types.len() {
            return Err(MarshalError::NonCanonical("unreferenced type definition"));
        }
        Ok(set)
    }
}

/// One difference between two signature sets ("mine" is this process, "theirs" the group).
///
/// ```
/// use vsync::marshal::{compare, Args, Difference, SignatureSet};
/// let mut mine = SignatureSet::new();
/// mine.add(4, &<(u8,)>::signature()).unwrap();
/// let err = compare(&mine, &SignatureSet::new()).unwrap_err();
/// assert!(matches!(err.differences[0], Difference::CodeOnlyInMine { code: 4, .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Difference {
    /// A request code only this side handles.
    CodeOnlyInMine {
        /// The code.
        code: RequestCode,
        /// Its signatures here.
        signatures: Vec<Signature>,
    },
    /// A request code only the other side handles.
    CodeOnlyInTheirs {
        /// The code.
        code: RequestCode,
        /// Its signatures there.
        signatures: Vec<Signature>,
    },
    /// Both handle the code, but this signature only exists here.
    SignatureOnlyInMine {
        /// The code.
        code: RequestCode,
        /// The signature.
        signature: Signature,
    },
    /// Both handle the code, but this signature only exists there.
    SignatureOnlyInTheirs {
        /// The code.
        code: RequestCode,
        /// The signature.
        signature: Signature,
    },
    /// Corresponding handlers whose signatures differ (at any depth).
    SignatureDiffers {
        /// The code.
        code: RequestCode,
        /// The signature here, deep.
        mine: Signature,
        /// The signature there, deep.
        theirs: Signature,
    },
    /// A type id bound to different definitions.
    TypeDiffers {
        /// Here.
        mine: Arc<UserType>,
        /// There.
        theirs: Arc<UserType>,
    },
    /// A type name bound to different ids.
    TypeIdDiffers {
        /// The name.
        name: String,
        /// The id here.
        mine: TypeId,
        /// The id there.
        theirs: TypeId,
    },
}

fn sig_list(sigs: &[Signature]) -> String {
    let v: Vec<String> = sigs.iter().map(|s| format!("{s:#}")).collect();
    v.join(", ")
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::CodeOnlyInMine { code, signatures } => write!(
                f,
                "code {code}: handled only on this side {}",
                sig_list(signatures)
            ),
            Difference::CodeOnlyInTheirs { code, signatures } => write!(
                f,
                "code {code}: handled only on the other side {}",
                sig_list(signatures)
            ),
            Difference::SignatureOnlyInMine { code, signature } => {
                write!(f, "code {code}: handler {signature:#} only on this side")
            }
            Difference::SignatureOnlyInTheirs { code, signature } => {
                write!(
                    f,
                    "code {code}: handler {signature:#} only on the other side"
                )
            }
            Difference::SignatureDiffers { code, mine, theirs } => {
                write!(f, "code {code}: {mine:#} vs {theirs:#}")
            }
            Difference::TypeDiffers { mine, theirs } => {
                write!(f, "type {}: {mine:#} vs {theirs:#}", mine.id)
            }
            Difference::TypeIdDiffers { name, mine, theirs } => {
                write!(f, "type {name}: id {mine} vs id {theirs}")
            }
        }
    }
}

/// Two signature sets disagree; `differences` lists everything that differs.
///
/// ```
/// use vsync::marshal::{compare, Args, SignatureSet};
/// let (mut mine, mut theirs) = (SignatureSet::new(), SignatureSet::new());
/// mine.add(0, &<(u8,)>::signature()).unwrap();
/// theirs.add(0, &<(u16,)>::signature()).unwrap();
/// let mismatch = compare(&mine, &theirs).unwrap_err();
/// assert!(!mismatch.differences.is_empty());
/// assert!(mismatch.to_string().starts_with("handler signatures differ: "));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureMismatch {
    /// The differences, codes first (ascending), then types.
    pub differences: Vec<Difference>,
}

impl fmt::Display for SignatureMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("handler signatures differ: ")?;
        for (i, d) in self.differences.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SignatureMismatch {}

/// Compares two signature sets; the error names exactly what differs.
///
/// ```
/// use vsync::marshal::{compare, Handlers, TypeRegistry};
///
/// mod a { vsync::marshal_struct! { pub struct Point { pub x: i32, pub y: i32 } type_id = 1001 } }
/// mod b { vsync::marshal_struct! { pub struct Point { pub x: i32, pub y: i64 } type_id = 1001 } }
///
/// let (mut ha, mut ra) = (Handlers::new(), TypeRegistry::new());
/// ra.register::<a::Point>().unwrap();
/// ha.on(3, |name: String, pts: Vec<a::Point>| {});
/// let (mut hb, mut rb) = (Handlers::new(), TypeRegistry::new());
/// rb.register::<b::Point>().unwrap();
/// hb.on(3, |name: String, pts: Vec<b::Point>| {});
///
/// let err = compare(&ha.signature_set(&ra).unwrap(), &hb.signature_set(&rb).unwrap())
///     .unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "handler signatures differ: \
///      code 3: (String, Vec<Point#1001{x:i32,y:i32}>) vs (String, Vec<Point#1001{x:i32,y:i64}>); \
///      type 1001: Point#1001{x:i32,y:i32} vs Point#1001{x:i32,y:i64}"
/// );
/// ```
pub fn compare(mine: &SignatureSet, theirs: &SignatureSet) -> Result<(), SignatureMismatch> {
    if mine == theirs {
        return Ok(());
    }
    let mut differences = Vec::new();
    let codes: BTreeSet<RequestCode> = mine.codes().chain(theirs.codes()).collect();
    for code in codes {
        match (mine.handlers.get(&code), theirs.handlers.get(&code)) {
            (Some(_), None) => differences.push(Difference::CodeOnlyInMine {
                code,
                signatures: mine.signatures(code),
            }),
            (None, Some(_)) => differences.push(Difference::CodeOnlyInTheirs {
                code,
                signatures: theirs.signatures(code),
            }),
            (Some(a), Some(b)) => compare_code(code, mine, a, theirs, b, &mut differences),
            (None, None) => {}
        }
    }
    for (id, d) in &mine.types {
        if let Some(t) = theirs.types.get(id) {
            if definition_bytes(d) != definition_bytes(t) {
                differences.push(Difference::TypeDiffers {
                    mine: d.clone(),
                    theirs: t.clone(),
                });
            }
        }
    }
    for d in mine.types.values() {
        if let Some(t) = theirs
            .types
            .values()
            .find(|t| t.name == d.name && t.id != d.id)
        {
            differences.push(Difference::TypeIdDiffers {
                name: d.name.clone(),
                mine: d.id,
                theirs: t.id,
            });
        }
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(SignatureMismatch { differences })
    }
}

type SigMap = BTreeMap<Vec<u8>, Signature>;

fn compare_code(
    code: RequestCode,
    mine: &SignatureSet,
    a: &SigMap,
    theirs: &SignatureSet,
    b: &SigMap,
    out: &mut Vec<Difference>,
) {
    // Same shallow code: equal unless a reachable definition differs.
    for (bytes, sa) in a {
        if let Some(sb) = b.get(bytes) {
            let (ra, rb) = (mine.reachable(sa), theirs.reachable(sb));
            let same = ra == rb
                && ra
                    .iter()
                    .all(|id| match (mine.types.get(id), theirs.types.get(id)) {
                        (Some(x), Some(y)) => definition_bytes(x) == definition_bytes(y),
                        _ => false,
                    });
            if !same {
                out.push(Difference::SignatureDiffers {
                    code,
                    mine: mine.expand(sa),
                    theirs: theirs.expand(sb),
                });
            }
        }
    }
    let only_a: Vec<&Signature> = a
        .iter()
        .filter(|(k, _)| !b.contains_key(*k))
        .map(|(_, s)| s)
        .collect();
    let only_b: Vec<&Signature> = b
        .iter()
        .filter(|(k, _)| !a.contains_key(*k))
        .map(|(_, s)| s)
        .collect();
    if only_a.len() == 1 && only_b.len() == 1 {
        out.push(Difference::SignatureDiffers {
            code,
            mine: mine.expand(only_a[0]),
            theirs: theirs.expand(only_b[0]),
        });
        return;
    }
    for s in only_a {
        out.push(Difference::SignatureOnlyInMine {
            code,
            signature: mine.expand(s),
        });
    }
    for s in only_b {
        out.push(Difference::SignatureOnlyInTheirs {
            code,
            signature: theirs.expand(s),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marshal::Args;

    crate::marshal_struct! { struct Leaf { v: u8 } type_id = 80 }
    crate::marshal_struct! { struct Branch { leaves: Vec<Leaf>, next: Option<Box<Branch>> } type_id = 81 }

    fn set_of(pairs: &[(RequestCode, Signature)]) -> SignatureSet {
        let mut s = SignatureSet::new();
        for (c, sig) in pairs {
            s.add(*c, sig).unwrap();
        }
        s
    }

    #[test]
    fn order_independent_digest_and_round_trip() {
        let s1 = set_of(&[
            (1, <(String, i32)>::signature()),
            (1, <(i32, i32)>::signature()),
            (2, <(Branch,)>::signature()),
        ]);
        let s2 = set_of(&[
            (2, <(Branch,)>::signature()),
            (1, <(i32, i32)>::signature()),
            (1, <(String, i32)>::signature()),
            (1, <(i32, i32)>::signature()),
        ]);
        assert_eq!(s1, s2);
        assert_eq!(s1.digest(), s2.digest());
        assert_eq!(s1.len(), 3);
        let bytes = s1.to_bytes();
        let back = SignatureSet::from_bytes(&bytes).unwrap();
        assert_eq!(back, s1);
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(
            format!("{:#}", back.signatures(2)[0]),
            "(Branch#81{leaves:Vec<Leaf#80{v:u8}>,next:Option<Branch#81>})"
        );
        assert_eq!(back.signatures(2)[0], <(Branch,)>::signature());
        assert_eq!(back.types().count(), 2);
    }

    #[test]
    fn non_canonical_inputs_are_refused() {
        let s = set_of(&[(1, <(u8,)>::signature()), (2, <(u16,)>::signature())]);
        let b = s.to_bytes();
        // Swap the two code entries: [ver, 2, (1, 1, sig: 1 0x03), (2, 1, sig: 1 0x04), 0]
        assert_eq!(b, [1, 2, 1, 1, 1, 0x03, 2, 1, 1, 0x04, 0]);
        let mut swapped = b.clone();
        swapped[2..6].copy_from_slice(&b[6..10]);
        swapped[6..10].copy_from_slice(&b[2..6]);
        assert_eq!(
            SignatureSet::from_bytes(&swapped),
            Err(MarshalError::NonCanonical("request codes not ascending"))
        );
        // A reference to an undefined type.
        let mut w = Writer::new();
        w.put_u8(1);
        w.put_len(1);
        w.put_varint(1);
        w.put_len(1);
        w.put_bytes(&[1, 0x30, 5]);
        w.put_len(0);
        assert_eq!(
            SignatureSet::from_bytes(w.as_bytes()),
            Err(MarshalError::NonCanonical("reference to an undefined type"))
        );
    }

    #[test]
    fn differences_are_named() {
        let mine = set_of(&[
            (1, <(String, i32)>::signature()),
            (1, <(i32, i32)>::signature()),
            (2, <(i32,)>::signature()),
            (4, <(u8,)>::signature()),
        ]);
        let theirs = set_of(&[
            (1, <(String, i32)>::signature()),
            (1, <(i32, i64)>::signature()),
            (3, <(String,)>::signature()),
            (4, <(u8,)>::signature()),
            (4, <(u16,)>::signature()),
            (4, <(u32,)>::signature()),
        ]);
        let e = compare(&mine, &theirs).unwrap_err();
        assert_eq!(
            e.to_string(),
            "handler signatures differ: code 1: (i32, i32) vs (i32, i64); \
             code 2: handled only on this side (i32); \
             code 3: handled only on the other side (String); \
             code 4: handler (u16) only on the other side; \
             code 4: handler (u32) only on the other side"
        );
        assert!(compare(&mine, &mine).is_ok());
    }

    #[test]
    fn signature_set_is_marshallable_as_an_argument() {
        let s = set_of(&[(7, <(Leaf,)>::signature())]);
        let a = crate::args!(&s, 3u32);
        assert_eq!(a.signature().to_string(), "(#4294901761, u32)");
        let (back, n): (SignatureSet, u32) = a.decode().unwrap();
        assert_eq!((back, n), (s, 3));
    }
}
