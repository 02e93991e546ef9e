//! Type descriptors: [`TypeDesc`] describes a marshallable type *deeply* — built-in types
//! fully, user types by registered name, type id and the descriptors of their fields — and
//! [`Signature`] is the list of argument types of a request.
//!
//! Two encodings exist:
//!
//! * the **type code** (shallow): what every argument list carries. One tag byte per node,
//!   children after it; a user type is its tag and its id only. Codes are prefix-free, so two
//!   types have equal codes exactly when they are equal up to user-type definitions.
//! * the **definition** of a user type ([`Shape`]): its fields' type codes, used by the
//!   registry and by [`SignatureSet`](super::SignatureSet), so that deep agreement is checked
//!   once, at join time, not per message.
//!
//! `Display` prints the short form (`(String, Vec<Point#1001>)`); the alternate form `{:#}`
//! prints user types with their definitions (`(String, Vec<Point#1001{x:i32,y:i32}>)`).
//!
//! ```
//! use std::collections::BTreeMap;
//! use vsync::marshal::{Address, Encode};
//!
//! type T = Vec<BTreeMap<String, (i32, Option<Address>)>>;
//! assert_eq!(T::type_desc().to_string(), "Vec<Map<String, (i32, Option<Address>)>>");
//! ```

use std::fmt;
use std::sync::Arc;

use super::error::MarshalError;
use super::wire::{CodeSink, Reader, Writer};

/// Type-code tag bytes.
pub(crate) mod tag {
    pub const BOOL: u8 = 0x01;
    pub const CHAR: u8 = 0x02;
    pub const U8: u8 = 0x03;
    pub const U16: u8 = 0x04;
    pub const U32: u8 = 0x05;
    pub const U64: u8 = 0x06;
    pub const U128: u8 = 0x07;
    pub const I8: u8 = 0x08;
    pub const I16: u8 = 0x09;
    pub const I32: u8 = 0x0a;
    pub const I64: u8 = 0x0b;
    pub const I128: u8 = 0x0c;
    pub const F32: u8 = 0x0d;
    pub const F64: u8 = 0x0e;
    pub const STRING: u8 = 0x0f;
    pub const ADDRESS: u8 = 0x10;
    pub const VIEW: u8 = 0x11;
    pub const VEC: u8 = 0x20;
    pub const ARRAY: u8 = 0x21;
    pub const OPTION: u8 = 0x22;
    pub const TUPLE: u8 = 0x23;
    pub const MAP: u8 = 0x24;
    pub const USER: u8 = 0x30;
}

/// Deepest nesting accepted when decoding type codes and definitions.
///
/// ```
/// use vsync::marshal::{MarshalError, Reader, TypeDesc, MAX_TYPE_DEPTH};
/// let code = vec![0x20; MAX_TYPE_DEPTH as usize + 1]; // Vec<Vec<Vec<...>>>, too deep
/// let err = TypeDesc::read_code(&mut Reader::new(&code)).unwrap_err();
/// assert_eq!(err, MarshalError::DepthLimit(MAX_TYPE_DEPTH));
/// ```
pub const MAX_TYPE_DEPTH: u32 = 64;

/// Longest user type, field or variant name accepted when decoding a definition.
///
/// ```
/// assert_eq!(vsync::marshal::MAX_NAME_LEN, 1024);
/// ```
pub const MAX_NAME_LEN: usize = 1024;

/// A user type id. Ids from [`RESERVED_TYPE_IDS`] belong to vsync itself.
///
/// ```
/// use vsync::marshal::{Encode, TypeId};
/// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
/// let id: TypeId = Pt::type_desc().as_user().unwrap().id;
/// assert_eq!(id, 1001);
/// ```
pub type TypeId = u32;

/// Type ids reserved for vsync's own marshallable types (the registry refuses them).
///
/// ```
/// use vsync::marshal::{RESERVED_TYPE_IDS, SIGNATURE_SET_TYPE_ID};
/// assert!(RESERVED_TYPE_IDS.contains(&SIGNATURE_SET_TYPE_ID));
/// assert!(!RESERVED_TYPE_IDS.contains(&1001));
/// ```
pub const RESERVED_TYPE_IDS: std::ops::RangeInclusive<TypeId> = 0xffff_0000..=u32::MAX;

/// A deep description of a marshallable type.
///
/// ```
/// use vsync::marshal::{Encode, TypeDesc};
///
/// assert_eq!(<(String, Vec<u8>)>::type_desc(),
///            TypeDesc::Tuple(vec![TypeDesc::String, TypeDesc::vec(TypeDesc::U8)]));
/// assert_eq!(<[u16; 4]>::type_desc().to_string(), "[u16; 4]");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TypeDesc {
    /// `bool`
    Bool,
    /// `char`
    Char,
    /// `u8`
    U8,
    /// `u16`
    U16,
    /// `u32`
    U32,
    /// `u64` (and `usize`)
    U64,
    /// `u128`
    U128,
    /// `i8`
    I8,
    /// `i16`
    I16,
    /// `i32`
    I32,
    /// `i64` (and `isize`)
    I64,
    /// `i128`
    I128,
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// `String` (and `&str`)
    String,
    /// A member address ([`Address`](super::Address)).
    Address,
    /// A group view ([`View`](super::View)).
    View,
    /// `Vec<T>` (and `&[T]`); `Vec<u8>` is encoded as compact bytes.
    Vec(Box<TypeDesc>),
    /// `[T; N]`
    Array(Box<TypeDesc>, usize),
    /// `Option<T>`
    Option(Box<TypeDesc>),
    /// A tuple `(A, B, ...)`.
    Tuple(Vec<TypeDesc>),
    /// `BTreeMap<K, V>` or `HashMap<K, V>` (the same on the wire).
    Map(Box<TypeDesc>, Box<TypeDesc>),
    /// A registered user type.
    User(Arc<UserType>),
}

/// A user type: its name, id and (unless this is a reference) definition.
///
/// `shape` is `None` for a reference: inside a recursive type's own definition, in shallow
/// type codes decoded from a message, and in the field lists of registered definitions.
///
/// ```
/// use vsync::marshal::{Encode, Fields, Shape, TypeDesc};
/// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
/// let u = Pt::type_desc().as_user().unwrap().clone();
/// assert_eq!((u.name.as_str(), u.id), ("Pt", 1001));
/// let Some(Shape::Struct(Fields::Named(f))) = &u.shape else { panic!() };
/// assert_eq!(f[0], ("x".to_string(), TypeDesc::I32));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserType {
    /// The registered name (empty when only the id is known).
    pub name: String,
    /// The type id.
    pub id: TypeId,
    /// The definition, if known here.
    pub shape: Option<Shape>,
}

/// The definition of a user type.
///
/// ```
/// use vsync::marshal::{Fields, Shape, TypeDesc, UserType};
/// let u = UserType::new("Meters", 1005, Shape::Struct(Fields::Unnamed(vec![TypeDesc::F64])));
/// assert_eq!(format!("{:#}", TypeDesc::user(u)), "Meters#1005(f64)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// A struct (named, tuple or unit).
    Struct(Fields),
    /// An enum: its variants in declaration order (the variant index is the position).
    Enum(Vec<Variant>),
    /// A hand-written encoding, identified by a label the implementer changes whenever the
    /// encoding changes.
    Opaque(String),
}

/// One enum variant.
///
/// ```
/// use vsync::marshal::{Fields, Shape, TypeDesc, UserType, Variant};
/// let on = Variant { name: "On".into(), fields: Fields::Unnamed(vec![TypeDesc::U8]) };
/// let off = Variant { name: "Off".into(), fields: Fields::Unit };
/// let u = UserType::new("Switch", 1006, Shape::Enum(vec![on, off]));
/// assert!(matches!(&u.shape, Some(Shape::Enum(v)) if v.len() == 2));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    /// The variant's name.
    pub name: String,
    /// Its fields.
    pub fields: Fields,
}

/// The fields of a struct or variant, in encoding order.
///
/// ```
/// use vsync::marshal::{Fields, Shape, TypeDesc};
/// let named = Fields::Named(vec![("x".into(), TypeDesc::I32)]);
/// let mut n = 0;
/// Shape::Struct(named).for_each_type(&mut |_| n += 1);
/// assert_eq!(n, 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Fields {
    /// `{ a: A, b: B }`
    Named(Vec<(String, TypeDesc)>),
    /// `(A, B)`
    Unnamed(Vec<TypeDesc>),
    /// No fields.
    Unit,
}

impl TypeDesc {
    /// `Vec<t>`.
    ///
    /// ```
    /// use vsync::marshal::{Encode, TypeDesc};
    /// assert_eq!(TypeDesc::vec(TypeDesc::I32), Vec::<i32>::type_desc());
    /// ```
    pub fn vec(t: TypeDesc) -> Self {
        TypeDesc::Vec(Box::new(t))
    }

    /// `Option<t>`.
    ///
    /// ```
    /// use vsync::marshal::{Encode, TypeDesc};
    /// assert_eq!(TypeDesc::option(TypeDesc::String), Option::<String>::type_desc());
    /// ```
    pub fn option(t: TypeDesc) -> Self {
        TypeDesc::Option(Box::new(t))
    }

    /// `[t; n]`.
    ///
    /// ```
    /// use vsync::marshal::{Encode, TypeDesc};
    /// assert_eq!(TypeDesc::array(TypeDesc::U8, 4), <[u8; 4]>::type_desc());
    /// ```
    pub fn array(t: TypeDesc, n: usize) -> Self {
        TypeDesc::Array(Box::new(t), n)
    }

    /// `Map<k, v>`.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use vsync::marshal::{Encode, TypeDesc};
    /// let m = TypeDesc::map(TypeDesc::String, TypeDesc::U64);
    /// assert_eq!(m, BTreeMap::<String, u64>::type_desc());
    /// ```
    pub fn map(k: TypeDesc, v: TypeDesc) -> Self {
        TypeDesc::Map(Box::new(k), Box::new(v))
    }

    /// A user type.
    ///
    /// ```
    /// use vsync::marshal::{TypeDesc, UserType};
    /// let t = TypeDesc::user(UserType::reference("Pt", 1001));
    /// assert_eq!(t.to_string(), "Pt#1001");
    /// ```
    pub fn user(u: UserType) -> Self {
        TypeDesc::User(Arc::new(u))
    }

    /// The user type, if this is one.
    ///
    /// ```
    /// use vsync::marshal::TypeDesc;
    /// assert!(TypeDesc::I32.as_user().is_none());
    /// ```
    pub fn as_user(&self) -> Option<&Arc<UserType>> {
        match self {
            TypeDesc::User(u) => Some(u),
            _ => None,
        }
    }

    /// Writes the shallow type code.
    ///
    /// ```
    /// use vsync::marshal::TypeDesc;
    /// let mut code = Vec::new();
    /// TypeDesc::vec(TypeDesc::I32).write_code(&mut code);
    /// assert_eq!(code, TypeDesc::vec(TypeDesc::I32).code());
    /// ```
    pub fn write_code<S: CodeSink + ?Sized>(&self, s: &mut S) {
        use TypeDesc::*;
        let t = match self {
            Bool => tag::BOOL,
            Char => tag::CHAR,
            U8 => tag::U8,
            U16 => tag::U16,
            U32 => tag::U32,
            U64 => tag::U64,
            U128 => tag::U128,
            I8 => tag::I8,
            I16 => tag::I16,
            I32 => tag::I32,
            I64 => tag::I64,
            I128 => tag::I128,
            F32 => tag::F32,
            F64 => tag::F64,
            String => tag::STRING,
            Address => tag::ADDRESS,
            View => tag::VIEW,
            Vec(t) => {
                s.put(tag::VEC);
                return t.write_code(s);
            }
            Array(t, n) => {
                s.put(tag::ARRAY);
                s.put_varint(*n as u64);
                return t.write_code(s);
            }
            Option(t) => {
                s.put(tag::OPTION);
                return t.write_code(s);
            }
            Tuple(ts) => {
                s.put(tag::TUPLE);
                s.put_varint(ts.len() as u64);
                for t in ts {
                    t.write_code(s);
                }
                return;
            }
            Map(k, v) => {
                s.put(tag::MAP);
                k.write_code(s);
                return v.write_code(s);
            }
            User(u) => {
                s.put(tag::USER);
                return s.put_varint(u.id as u64);
            }
        };
        s.put(t);
    }

    /// The shallow type code as bytes.
    ///
    /// ```
    /// use vsync::marshal::{Encode, TypeDesc};
    /// assert_eq!(Vec::<Option<i32>>::type_desc().code(), vec![0x20, 0x22, 0x0a]);
    /// ```
    pub fn code(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_code(&mut v);
        v
    }

    /// Reads a shallow type code. User types come back as references carrying only their id
    /// (empty name, no shape).
    ///
    /// ```
    /// use vsync::marshal::{Encode, Reader, TypeDesc};
    /// let code = Vec::<Option<bool>>::type_desc().code();
    /// let t = TypeDesc::read_code(&mut Reader::new(&code)).unwrap();
    /// assert_eq!(t.to_string(), "Vec<Option<bool>>");
    /// ```
    pub fn read_code(r: &mut Reader<'_>) -> Result<TypeDesc, MarshalError> {
        Self::read_code_at(r, 0)
    }

    fn read_code_at(r: &mut Reader<'_>, depth: u32) -> Result<TypeDesc, MarshalError> {
        if depth >= MAX_TYPE_DEPTH {
            return Err(MarshalError::DepthLimit(MAX_TYPE_DEPTH));
        }
        let d = depth + 1;
        Ok(match r.get_u8()? {
            tag::BOOL => TypeDesc::Bool,
            tag::CHAR => TypeDesc::Char,
            tag::U8 => TypeDesc::U8,
            tag::U16 => TypeDesc::U16,
            tag::U32 => TypeDesc::U32,
            tag::U64 => TypeDesc::U64,
            tag::U128 => TypeDesc::U128,
            tag::I8 => TypeDesc::I8,
            tag::I16 => TypeDesc::I16,
            tag::I32 => TypeDesc::I32,
            tag::I64 => TypeDesc::I64,
            tag::I128 => TypeDesc::I128,
            tag::F32 => TypeDesc::F32,
            tag::F64 => TypeDesc::F64,
            tag::STRING => TypeDesc::String,
            tag::ADDRESS => TypeDesc::Address,
            tag::VIEW => TypeDesc::View,
            tag::VEC => TypeDesc::vec(Self::read_code_at(r, d)?),
            tag::ARRAY => {
                let n = r.get_varint()?;
                let n = usize::try_from(n).map_err(|_| MarshalError::OutOfRange("usize"))?;
                TypeDesc::array(Self::read_code_at(r, d)?, n)
            }
            tag::OPTION => TypeDesc::option(Self::read_code_at(r, d)?),
            tag::TUPLE => {
                let n = r.get_len()?;
                let mut ts = Vec::with_capacity(r.prealloc::<TypeDesc>(n));
                for _ in 0..n {
                    ts.push(Self::read_code_at(r, d)?);
                }
                TypeDesc::Tuple(ts)
            }
            tag::MAP => {
                let k = Self::read_code_at(r, d)?;
                TypeDesc::map(k, Self::read_code_at(r, d)?)
            }
            tag::USER => {
                let id = r.get_varint()?;
                let id = TypeId::try_from(id).map_err(|_| MarshalError::OutOfRange("type id"))?;
                TypeDesc::User(Arc::new(UserType::reference("", id)))
            }
            other => return Err(MarshalError::UnknownTypeCode(other)),
        })
    }

    /// Validates and skips one type code without building it (accepts exactly what
    /// [`TypeDesc::read_code`] accepts).
    pub(crate) fn skip_code(r: &mut Reader<'_>, depth: u32) -> Result<(), MarshalError> {
        if depth >= MAX_TYPE_DEPTH {
            return Err(MarshalError::DepthLimit(MAX_TYPE_DEPTH));
        }
        let d = depth + 1;
        match r.get_u8()? {
            tag::BOOL..=tag::VIEW => Ok(()),
            tag::VEC | tag::OPTION => Self::skip_code(r, d),
            tag::ARRAY => {
                usize::try_from(r.get_varint()?).map_err(|_| MarshalError::OutOfRange("usize"))?;
                Self::skip_code(r, d)
            }
            tag::TUPLE => {
                for _ in 0..r.get_len()? {
                    Self::skip_code(r, d)?;
                }
                Ok(())
            }
            tag::MAP => {
                Self::skip_code(r, d)?;
                Self::skip_code(r, d)
            }
            tag::USER => {
                TypeId::try_from(r.get_varint()?)
                    .map_err(|_| MarshalError::OutOfRange("type id"))?;
                Ok(())
            }
            other => Err(MarshalError::UnknownTypeCode(other)),
        }
    }

    /// The same type with every user type replaced by a reference (name and id, no shape).
    ///
    /// ```
    /// use vsync::marshal::Encode;
    /// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
    /// let deep = Vec::<Pt>::type_desc();
    /// assert_eq!(format!("{:#}", deep), "Vec<Pt#1001{x:i32,y:i32}>");
    /// assert_eq!(format!("{:#}", deep.shallow()), "Vec<Pt#1001>");
    /// ```
    pub fn shallow(&self) -> TypeDesc {
        self.map_users(&mut |u| TypeDesc::User(Arc::new(UserType::reference(&u.name, u.id))))
    }

    /// Rebuilds this descriptor, replacing every user-type node (without descending into it)
    /// by `f`'s result.
    ///
    /// ```
    /// use vsync::marshal::{Encode, TypeDesc};
    /// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
    /// let t = Option::<Pt>::type_desc().map_users(&mut |_| TypeDesc::U8);
    /// assert_eq!(t.to_string(), "Option<u8>");
    /// ```
    pub fn map_users(&self, f: &mut dyn FnMut(&Arc<UserType>) -> TypeDesc) -> TypeDesc {
        use TypeDesc::*;
        match self {
            Vec(t) => TypeDesc::vec(t.map_users(f)),
            Array(t, n) => TypeDesc::array(t.map_users(f), *n),
            Option(t) => TypeDesc::option(t.map_users(f)),
            Tuple(ts) => Tuple(ts.iter().map(|t| t.map_users(f)).collect()),
            Map(k, v) => TypeDesc::map(k.map_users(f), v.map_users(f)),
            User(u) => f(u),
            other => other.clone(),
        }
    }

    /// Calls `f` on every user-type node, outermost first, descending into definitions.
    ///
    /// ```
    /// use vsync::marshal::Encode;
    /// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
    /// vsync::marshal_struct! { pub struct Line { pub a: Pt, pub b: Pt } type_id = 1002 }
    /// let mut ids = Vec::new();
    /// Line::type_desc().visit_users(&mut |u| ids.push(u.id));
    /// assert_eq!(ids[0], 1002); // outermost first
    /// assert!(ids.contains(&1001));
    /// ```
    pub fn visit_users(&self, f: &mut dyn FnMut(&Arc<UserType>)) {
        use TypeDesc::*;
        match self {
            Vec(t) | Array(t, _) | Option(t) => t.visit_users(f),
            Tuple(ts) => ts.iter().for_each(|t| t.visit_users(f)),
            Map(k, v) => {
                k.visit_users(f);
                v.visit_users(f);
            }
            User(u) => {
                f(u);
                if let Some(shape) = &u.shape {
                    shape.for_each_type(&mut |t| t.visit_users(f));
                }
            }
            _ => {}
        }
    }

    fn fmt_with(&self, f: &mut fmt::Formatter<'_>, deep: bool) -> fmt::Result {
        use TypeDesc::*;
        let name = match self {
            Bool => "bool",
            Char => "char",
            U8 => "u8",
            U16 => "u16",
            U32 => "u32",
            U64 => "u64",
            U128 => "u128",
            I8 => "i8",
            I16 => "i16",
            I32 => "i32",
            I64 => "i64",
            I128 => "i128",
            F32 => "f32",
            F64 => "f64",
            String => "String",
            Address => "Address",
            View => "View",
            Vec(t) => {
                f.write_str("Vec<")?;
                t.fmt_with(f, deep)?;
                return f.write_str(">");
            }
            Array(t, n) => {
                f.write_str("[")?;
                t.fmt_with(f, deep)?;
                return write!(f, "; {n}]");
            }
            Option(t) => {
                f.write_str("Option<")?;
                t.fmt_with(f, deep)?;
                return f.write_str(">");
            }
            Tuple(ts) => return fmt_list(f, ts, deep, ts.len() == 1),
            Map(k, v) => {
                f.write_str("Map<")?;
                k.fmt_with(f, deep)?;
                f.write_str(", ")?;
                v.fmt_with(f, deep)?;
                return f.write_str(">");
            }
            User(u) => return u.fmt_with(f, deep),
        };
        f.write_str(name)
    }
}

fn fmt_list(
    f: &mut fmt::Formatter<'_>,
    ts: &[TypeDesc],
    deep: bool,
    trailing_comma: bool,
) -> fmt::Result {
    f.write_str("(")?;
    for (i, t) in ts.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        t.fmt_with(f, deep)?;
    }
    if trailing_comma {
        f.write_str(",")?;
    }
    f.write_str(")")
}

impl fmt::Display for TypeDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_with(f, f.alternate())
    }
}

impl UserType {
    /// A reference to a user type (no definition).
    ///
    /// ```
    /// use vsync::marshal::UserType;
    /// let r = UserType::reference("Pt", 1001);
    /// assert!(r.shape.is_none());
    /// ```
    pub fn reference(name: &str, id: TypeId) -> Self {
        UserType {
            name: name.to_owned(),
            id,
            shape: None,
        }
    }

    /// A user type with a definition.
    ///
    /// ```
    /// use vsync::marshal::{Fields, Shape, UserType};
    /// let u = UserType::new("Empty", 1003, Shape::Struct(Fields::Unit));
    /// assert!(u.shape.is_some());
    /// ```
    pub fn new(name: &str, id: TypeId, shape: Shape) -> Self {
        UserType {
            name: name.to_owned(),
            id,
            shape: Some(shape),
        }
    }

    /// The definition with every field type made shallow: what the registry stores and
    /// what a [`SignatureSet`](super::SignatureSet) carries.
    ///
    /// ```
    /// use vsync::marshal::Encode;
    /// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
    /// vsync::marshal_struct! { pub struct Line { pub a: Pt, pub b: Pt } type_id = 1002 }
    /// let def = Line::type_desc().as_user().unwrap().definition();
    /// let shown = format!("{:#}", vsync::marshal::TypeDesc::user(def));
    /// assert_eq!(shown, "Line#1002{a:Pt#1001,b:Pt#1001}");
    /// ```
    pub fn definition(&self) -> UserType {
        UserType {
            name: self.name.clone(),
            id: self.id,
            shape: self
                .shape
                .as_ref()
                .map(|s| s.map_types(&mut |t| t.shallow())),
        }
    }

    fn fmt_with(&self, f: &mut fmt::Formatter<'_>, deep: bool) -> fmt::Result {
        write!(f, "{}#{}", self.name, self.id)?;
        match (&self.shape, deep) {
            (Some(shape), true) => shape.fmt_deep(f),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for UserType {
    /// `Name#id`, or with `{:#}` `Name#id{field:type,...}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_with(f, f.alternate())
    }
}

impl Fields {
    fn for_each_type(&self, f: &mut dyn FnMut(&TypeDesc)) {
        match self {
            Fields::Named(fs) => fs.iter().for_each(|(_, t)| f(t)),
            Fields::Unnamed(ts) => ts.iter().for_each(f),
            Fields::Unit => {}
        }
    }

    fn map_types(&self, f: &mut dyn FnMut(&TypeDesc) -> TypeDesc) -> Fields {
        match self {
            Fields::Named(fs) => Fields::Named(fs.iter().map(|(n, t)| (n.clone(), f(t))).collect()),
            Fields::Unnamed(ts) => Fields::Unnamed(ts.iter().map(f).collect()),
            Fields::Unit => Fields::Unit,
        }
    }

    fn fmt_deep(&self, f: &mut fmt::Formatter<'_>, unit: &str) -> fmt::Result {
        match self {
            Fields::Named(fs) => {
                f.write_str("{")?;
                for (i, (n, t)) in fs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{n}:")?;
                    t.fmt_with(f, true)?;
                }
                f.write_str("}")
            }
            Fields::Unnamed(ts) => {
                f.write_str("(")?;
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    t.fmt_with(f, true)?;
                }
                f.write_str(")")
            }
            Fields::Unit => f.write_str(unit),
        }
    }

    fn write(&self, w: &mut Writer) {
        match self {
            Fields::Named(fs) => {
                w.put_u8(0);
                w.put_len(fs.len());
                for (n, t) in fs {
                    write_name(w, n);
                    t.write_code(w.vec_mut());
                }
            }
            Fields::Unnamed(ts) => {
                w.put_u8(1);
                w.put_len(ts.len());
                for t in ts {
                    t.write_code(w.vec_mut());
                }
            }
            Fields::Unit => w.put_u8(2),
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Fields, MarshalError> {
        Ok(match r.get_u8()? {
            0 => {
                let n = r.get_len()?;
                let mut fs = Vec::with_capacity(r.prealloc::<(String, TypeDesc)>(n));
                for _ in 0..n {
                    let name = read_name(r)?;
                    fs.push((name, TypeDesc::read_code(r)?));
                }
                Fields::Named(fs)
            }
            1 => {
                let n = r.get_len()?;
                let mut ts = Vec::with_capacity(r.prealloc::<TypeDesc>(n));
                for _ in 0..n {
                    ts.push(TypeDesc::read_code(r)?);
                }
                Fields::Unnamed(ts)
            }
            2 => Fields::Unit,
            t => return Err(MarshalError::UnknownTypeCode(t)),
        })
    }
}

impl Shape {
    /// Calls `f` on the type of every field (of every variant).
    ///
    /// ```
    /// use vsync::marshal::{Fields, Shape, TypeDesc};
    /// let s = Shape::Struct(Fields::Unnamed(vec![TypeDesc::U8, TypeDesc::String]));
    /// let mut names = Vec::new();
    /// s.for_each_type(&mut |t| names.push(t.to_string()));
    /// assert_eq!(names, ["u8", "String"]);
    /// ```
    pub fn for_each_type(&self, f: &mut dyn FnMut(&TypeDesc)) {
        match self {
            Shape::Struct(fields) => fields.for_each_type(f),
            Shape::Enum(vs) => vs.iter().for_each(|v| v.fields.for_each_type(f)),
            Shape::Opaque(_) => {}
        }
    }

    /// The same shape with every field type mapped by `f`.
    ///
    /// ```
    /// use vsync::marshal::{Fields, Shape, TypeDesc};
    /// let s = Shape::Struct(Fields::Unnamed(vec![TypeDesc::U8]));
    /// let wide = s.map_types(&mut |_| TypeDesc::U64);
    /// assert_eq!(wide, Shape::Struct(Fields::Unnamed(vec![TypeDesc::U64])));
    /// ```
    pub fn map_types(&self, f: &mut dyn FnMut(&TypeDesc) -> TypeDesc) -> Shape {
        match self {
            Shape::Struct(fields) => Shape::Struct(fields.map_types(f)),
            Shape::Enum(vs) => Shape::Enum(
                vs.iter()
                    .map(|v| Variant {
                        name: v.name.clone(),
                        fields: v.fields.map_types(f),
                    })
                    .collect(),
            ),
            Shape::Opaque(l) => Shape::Opaque(l.clone()),
        }
    }

    fn fmt_deep(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Struct(fields) => fields.fmt_deep(f, "{}"),
            Shape::Enum(vs) => {
                f.write_str("{")?;
                for (i, v) in vs.iter().enumerate() {
                    if i > 0 {
                        f.write_str("|")?;
                    }
                    f.write_str(&v.name)?;
                    v.fields.fmt_deep(f, "")?;
                }
                f.write_str("}")
            }
            Shape::Opaque(label) => write!(f, "{{opaque:{label}}}"),
        }
    }

    /// Writes the canonical encoding of the definition (field types as shallow codes).
    pub(crate) fn write(&self, w: &mut Writer) {
        match self {
            Shape::Struct(fields) => {
                w.put_u8(0);
                fields.write(w);
            }
            Shape::Enum(vs) => {
                w.put_u8(1);
                w.put_len(vs.len());
                for v in vs {
                    write_name(w, &v.name);
                    v.fields.write(w);
                }
            }
            Shape::Opaque(label) => {
                w.put_u8(2);
                write_name(w, label);
            }
        }
    }

    /// Reads what [`Shape::write`] wrote; field types come back shallow.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Shape, MarshalError> {
        Ok(match r.get_u8()? {
            0 => Shape::Struct(Fields::read(r)?),
            1 => {
                let n = r.get_len()?;
                let mut vs = Vec::with_capacity(r.prealloc::<Variant>(n));
                for _ in 0..n {
                    let name = read_name(r)?;
                    vs.push(Variant {
                        name,
                        fields: Fields::read(r)?,
                    });
                }
                Shape::Enum(vs)
            }
            2 => Shape::Opaque(read_name(r)?),
            t => return Err(MarshalError::UnknownTypeCode(t)),
        })
    }
}

pub(crate) fn write_name(w: &mut Writer, s: &str) {
    w.put_len(s.len());
    w.put_bytes(s.as_bytes());
}

pub(crate) fn read_name(r: &mut Reader<'_>) -> Result<String, MarshalError> {
    let n = r.get_len()?;
    if n > MAX_NAME_LEN {
        return Err(MarshalError::LengthLimit {
            len: n as u64,
            limit: MAX_NAME_LEN,
        });
    }
    let b = r.take(n)?;
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| MarshalError::InvalidUtf8)
}

/// The argument types of a request (or of a reply), in order.
///
/// ```
/// use vsync::marshal::{Args, Signature};
///
/// let sig: Signature = <(String, i32, i64) as Args>::signature();
/// assert_eq!(sig.to_string(), "(String, i32, i64)");
/// assert_eq!(sig.len(), 3);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Signature(pub Vec<TypeDesc>);

impl Signature {
    /// The number of arguments.
    ///
    /// ```
    /// use vsync::marshal::{Args, Signature};
    /// assert_eq!(<(u8, u8)>::signature().len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty signature `()`.
    ///
    /// ```
    /// use vsync::marshal::{Args, Signature};
    /// assert!(<()>::signature().is_empty());
    /// assert!(Signature::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The argument types.
    ///
    /// ```
    /// use vsync::marshal::{Args, TypeDesc};
    /// assert_eq!(<(u8, bool)>::signature().types(), &[TypeDesc::U8, TypeDesc::Bool]);
    /// ```
    pub fn types(&self) -> &[TypeDesc] {
        &self.0
    }

    /// Writes the signature code: the argument count (varint), then each type code.
    ///
    /// ```
    /// use vsync::marshal::{ArgList, Args};
    /// let mut code = Vec::new();
    /// <(u8, bool)>::signature().write_code(&mut code);
    /// assert_eq!(code, ArgList::new(&(1u8, true)).signature_code());
    /// ```
    pub fn write_code<S: CodeSink + ?Sized>(&self, s: &mut S) {
        s.put_varint(self.0.len() as u64);
        for t in &self.0 {
            t.write_code(s);
        }
    }

    /// The signature code as bytes.
    ///
    /// ```
    /// use vsync::marshal::{ArgList, Args};
    /// assert_eq!(<(i32,)>::signature().code(), ArgList::new(&(0i32,)).signature_code());
    /// ```
    pub fn code(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_code(&mut v);
        v
    }

    /// Reads a signature code (user types come back as id-only references).
    ///
    /// ```
    /// use vsync::marshal::{Args, Reader, Signature};
    /// let code = <(String, i64)>::signature().code();
    /// let sig = Signature::read_code(&mut Reader::new(&code)).unwrap();
    /// assert_eq!(sig.to_string(), "(String, i64)");
    /// ```
    pub fn read_code(r: &mut Reader<'_>) -> Result<Signature, MarshalError> {
        let n = r.get_len()?;
        let mut ts = Vec::with_capacity(r.prealloc::<TypeDesc>(n));
        for _ in 0..n {
            ts.push(TypeDesc::read_code(r)?);
        }
        Ok(Signature(ts))
    }

    /// Validates and skips a signature code without building it; returns the count.
    pub(crate) fn skip_code(r: &mut Reader<'_>) -> Result<usize, MarshalError> {
        let n = r.get_len()?;
        for _ in 0..n {
            TypeDesc::skip_code(r, 0)?;
        }
        Ok(n)
    }

    /// Fills in the names of id-only user-type references from the user types found in
    /// `known` (for readable error messages about signatures decoded from a message).
    ///
    /// ```
    /// use vsync::marshal::{Args, Reader, Signature};
    /// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
    /// let known = <(Pt,)>::signature();
    /// let bare = Signature::read_code(&mut Reader::new(&known.code())).unwrap();
    /// assert_eq!(bare.to_string(), "(#1001)");
    /// assert_eq!(bare.with_names_from([&known]).to_string(), "(Pt#1001)");
    /// ```
    pub fn with_names_from<'a>(&self, known: impl IntoIterator<Item = &'a Signature>) -> Self {
        let mut names = std::collections::BTreeMap::new();
        for s in known {
            for t in &s.0 {
                t.visit_users(&mut |u| {
                    if !u.name.is_empty() {
                        names.entry(u.id).or_insert_with(|| u.name.clone());
                    }
                });
            }
        }
        self.map_users(&mut |u| {
            let mut u = (**u).clone();
            if u.name.is_empty() {
                if let Some(n) = names.get(&u.id) {
                    u.name.clone_from(n);
                }
            }
            TypeDesc::User(Arc::new(u))
        })
    }

    /// The signature with each user-type node replaced by `f`'s result.
    ///
    /// ```
    /// use vsync::marshal::{Args, TypeDesc};
    /// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
    /// let s = <(Pt, u8)>::signature().map_users(&mut |_| TypeDesc::String);
    /// assert_eq!(s.to_string(), "(String, u8)");
    /// ```
    pub fn map_users(&self, f: &mut dyn FnMut(&Arc<UserType>) -> TypeDesc) -> Signature {
        Signature(self.0.iter().map(|t| t.map_users(f)).collect())
    }
}

impl fmt::Display for Signature {
    /// `(A, B)`; with `{:#}` user types show their definitions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_list(f, &self.0, f.alternate(), false)
    }
}

impl From<Vec<TypeDesc>> for Signature {
    fn from(v: Vec<TypeDesc>) -> Self {
        Signature(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(y: TypeDesc) -> TypeDesc {
        TypeDesc::user(UserType::new(
            "Point",
            1001,
            Shape::Struct(Fields::Named(vec![
                ("x".into(), TypeDesc::I32),
                ("y".into(), y),
            ])),
        ))
    }

    #[test]
    fn display_short_and_deep() {
        let sig = Signature(vec![TypeDesc::String, TypeDesc::vec(point(TypeDesc::I32))]);
        assert_eq!(sig.to_string(), "(String, Vec<Point#1001>)");
        assert_eq!(format!("{sig:#}"), "(String, Vec<Point#1001{x:i32,y:i32}>)");
        let one = TypeDesc::Tuple(vec![TypeDesc::Bool]);
        assert_eq!(one.to_string(), "(bool,)");
        let e = TypeDesc::user(UserType::new(
            "Shape",
            7,
            Shape::Enum(vec![
                Variant {
                    name: "Circle".into(),
                    fields: Fields::Unnamed(vec![TypeDesc::F64]),
                },
                Variant {
                    name: "Rect".into(),
                    fields: Fields::Named(vec![
                        ("w".into(), TypeDesc::F64),
                        ("h".into(), TypeDesc::F64),
                    ]),
                },
                Variant {
                    name: "Empty".into(),
                    fields: Fields::Unit,
                },
            ]),
        ));
        assert_eq!(
            format!("{e:#}"),
            "Shape#7{Circle(f64)|Rect{w:f64,h:f64}|Empty}"
        );
    }

    #[test]
    fn code_round_trip() {
        let t = TypeDesc::Tuple(vec![
            TypeDesc::map(TypeDesc::String, TypeDesc::option(TypeDesc::Address)),
            TypeDesc::array(TypeDesc::U8, 16),
            point(TypeDesc::I64),
            TypeDesc::View,
        ]);
        let code = t.code();
        let mut r = Reader::new(&code);
        let back = TypeDesc::read_code(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(
            back,
            t.shallow()
                .map_users(&mut |u| TypeDesc::user(UserType::reference("", u.id)))
        );
        assert_eq!(back.code(), code);
    }

    #[test]
    fn hostile_codes() {
        let deep = vec![tag::VEC; 10_000];
        assert_eq!(
            TypeDesc::read_code(&mut Reader::new(&deep)),
            Err(MarshalError::DepthLimit(MAX_TYPE_DEPTH))
        );
        assert_eq!(
            TypeDesc::read_code(&mut Reader::new(&[0xee])),
            Err(MarshalError::UnknownTypeCode(0xee))
        );
        // A tuple claiming 2^40 elements fails fast without allocating.
        let mut b = vec![tag::TUPLE];
        crate::marshal::wire::put_varint(&mut b, 1 << 40);
        assert!(TypeDesc::read_code(&mut Reader::new(&b)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn skip_agrees_with_read(bytes in proptest::collection::vec(0u8..0x32, 0..40)) {
            let mut a = Reader::new(&bytes);
            let mut b = Reader::new(&bytes);
            let read = Signature::read_code(&mut a);
            let skip = Signature::skip_code(&mut b);
            proptest::prop_assert_eq!(read.as_ref().map(Signature::len).ok(), skip.as_ref().ok().copied());
            proptest::prop_assert_eq!(read.err(), skip.err());
            proptest::prop_assert_eq!(a.position(), b.position());
        }
    }

    #[test]
    fn shape_round_trip() {
        let TypeDesc::User(u) = point(TypeDesc::vec(point(TypeDesc::I32))) else {
            unreachable!()
        };
        let def = u.definition();
        let mut w = Writer::new();
        def.shape.as_ref().unwrap().write(&mut w);
        let back = Shape::read(&mut Reader::new(w.as_bytes())).unwrap();
        // Field user types come back as id-only references.
        assert_eq!(
            format!("{:#}", UserType::new("Point", 1001, back)),
            "Point#1001{x:i32,y:Vec<#1001>}"
        );
    }
}
