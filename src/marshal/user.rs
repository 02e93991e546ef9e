//! User types: [`impl_marshal!`](crate::impl_marshal) implements
//! [`Encode`](super::Encode)/[`Marshal`](super::Marshal) for
//! an existing struct or enum, [`marshal_struct!`](crate::marshal_struct) declares a struct
//! and implements them in one go, and [`describe_user`] builds the descriptor of a
//! hand-written implementation.
//!
//! Encoding: a struct is its fields in the listed order; an enum is the variant's index in the
//! listed order (varint) followed by its fields. On the wire a user type's type code is only
//! its id; its definition travels once, in the [`SignatureSet`](super::SignatureSet)
//! exchanged at join time. The macros do not support generic types (implement the traits by
//! hand for those).

use std::cell::RefCell;

use super::desc::{Shape, TypeDesc, TypeId, UserType};

thread_local! {
    static IN_PROGRESS: RefCell<Vec<TypeId>> = const { RefCell::new(Vec::new()) };
}

struct PopOnDrop;

impl Drop for PopOnDrop {
    fn drop(&mut self) {
        IN_PROGRESS.with(|s| {
            s.borrow_mut().pop();
        });
    }
}

/// The descriptor of user type `name`/`id` whose definition `shape` computes. Inside its own
/// definition (a recursive type) the type appears as a reference, so describing a recursive
/// type terminates.
///
/// ```
/// use vsync::marshal::{
///     describe_user, CodeSink, Encode, Marshal, MarshalError, Reader, Shape, TypeDesc, Writer,
/// };
///
/// /// A hand-written type with its own compact encoding.
/// #[derive(Debug, PartialEq)]
/// struct Rgb(u8, u8, u8);
///
/// impl Encode for Rgb {
///     fn type_desc() -> TypeDesc {
///         describe_user("Rgb", 40, || Shape::Opaque("3 bytes".into()))
///     }
///     fn encode(&self, w: &mut Writer) {
///         w.put_bytes(&[self.0, self.1, self.2]);
///     }
/// }
/// impl Marshal for Rgb {
///     fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
///         let [a, b, c] = r.take_array()?;
///         Ok(Rgb(a, b, c))
///     }
/// }
///
/// assert_eq!(format!("{:#}", Rgb::type_desc()), "Rgb#40{opaque:3 bytes}");
/// assert_eq!(Rgb::from_bytes(&Rgb(1, 2, 3).to_bytes()).unwrap(), Rgb(1, 2, 3));
/// ```
pub fn describe_user(name: &str, id: TypeId, shape: impl FnOnce() -> Shape) -> TypeDesc {
    let recursive = IN_PROGRESS.with(|s| s.borrow().contains(&id));
    if recursive {
        return TypeDesc::user(UserType::reference(name, id));
    }
    IN_PROGRESS.with(|s| s.borrow_mut().push(id));
    let _pop = PopOnDrop;
    TypeDesc::user(UserType::new(name, id, shape()))
}

/// Support code for the macros; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use super::super::desc::{Fields, Shape, TypeDesc, TypeId, Variant};
    pub use super::super::error::MarshalError;
    pub use super::super::traits::{Encode, Marshal};
    pub use super::super::wire::{CodeSink, Reader, Writer};
    pub use super::describe_user;

    use super::super::desc::tag;

    /// Writes a user type's type code.
    #[inline]
    pub fn write_user_code<S: CodeSink + ?Sized>(s: &mut S, id: TypeId) {
        s.put(tag::USER);
        s.put_varint(id as u64);
    }

    /// The descriptor of the field `f` projects to.
    pub fn field_desc<S, T: Encode + ?Sized>(_f: impl Fn(&S) -> &T) -> TypeDesc {
        T::type_desc()
    }

    /// The descriptors of the fields a variant projection returns (never called).
    pub fn tuple_descs<S: 'static, R: RefTuple>(_f: impl Fn(&'static S) -> R) -> Vec<TypeDesc> {
        R::descs()
    }

    /// Pairs field names with their descriptors.
    pub fn named(names: &[&str], descs: Vec<TypeDesc>) -> Fields {
        Fields::Named(names.iter().map(|n| (*n).to_owned()).zip(descs).collect())
    }

    /// The variant's fields: the one given, or unit.
    pub fn pick<const N: usize>(f: [Fields; N]) -> Fields {
        f.into_iter().next().unwrap_or(Fields::Unit)
    }

    /// Decodes one field (the second argument only names it in the macro).
    #[inline]
    pub fn decode_field<T: Marshal, N>(r: &mut Reader<'_>, _name: N) -> Result<T, MarshalError> {
        T::decode(r)
    }

    /// Tuples of references whose element types are described.
    pub trait RefTuple {
        /// The element descriptors.
        fn descs() -> Vec<TypeDesc>;
    }

    impl RefTuple for () {
        fn descs() -> Vec<TypeDesc> {
            Vec::new()
        }
    }

    macro_rules! ref_tuple {
        ($($t:ident),+) => {
            impl<'a, $($t: Encode + ?Sized),+> RefTuple for ($(&'a $t,)+) {
                fn descs() -> Vec<TypeDesc> {
                    vec![$($t::type_desc()),+]
                }
            }
        };
    }
    ref_tuple!(A);
    ref_tuple!(A, B);
    ref_tuple!(A, B, C);
    ref_tuple!(A, B, C, D);
    ref_tuple!(A, B, C, D, E);
    ref_tuple!(A, B, C, D, E, F);
    ref_tuple!(A, B, C, D, E, F, G);
    ref_tuple!(A, B, C, D, E, F, G, H);
    ref_tuple!(A, B, C, D, E, F, G, H, I);
    ref_tuple!(A, B, C, D, E, F, G, H, I, J);
    ref_tuple!(A, B, C, D, E, F, G, H, I, J, K);
    ref_tuple!(A, B, C, D, E, F, G, H, I, J, K, L);
}

/// Implements [`Encode`](crate::marshal::Encode) and [`Marshal`](crate::marshal::Marshal) for
/// an existing (non-generic) struct or enum, with a type id. List the fields (and variants)
/// by name; their types are taken from the type itself. The listed order is the encoding
/// order. Enum variants may have up to 12 fields.
///
/// ```
/// use vsync::impl_marshal;
/// use vsync::marshal::prelude::*;
///
/// #[derive(Debug, PartialEq)]
/// pub struct GrPair { pub gaddr: Address, pub rate: i32 }
/// impl_marshal! { struct GrPair { gaddr, rate } type_id = 123 }
///
/// #[derive(Debug, PartialEq)]
/// pub struct Meters(pub f64);
/// impl_marshal! { struct Meters(0) type_id = 124 }
///
/// #[derive(Debug, PartialEq)]
/// pub enum Shape { Circle(f64), Rect { w: f64, h: f64 }, Empty }
/// impl_marshal! { enum Shape { Circle(r), Rect { w, h }, Empty } type_id = 125 }
///
/// assert_eq!(format!("{:#}", GrPair::type_desc()), "GrPair#123{gaddr:Address,rate:i32}");
/// assert_eq!(format!("{:#}", Shape::type_desc()), "Shape#125{Circle(f64)|Rect{w:f64,h:f64}|Empty}");
/// let s = Shape::Rect { w: 1.0, h: 2.0 };
/// assert_eq!(Shape::from_bytes(&s.to_bytes()).unwrap(), s);
/// assert_eq!(Meters::from_bytes(&Meters(2.5).to_bytes()).unwrap(), Meters(2.5));
/// ```
#[macro_export]
macro_rules! impl_marshal {
    // A struct with named fields.
    (struct $name:ident { $($f:ident),* $(,)? } type_id = $id:expr $(,)?) => {
        $crate::__marshal_user_common!($name, $id);

        impl $crate::marshal::Encode for $name {
            fn type_desc() -> $crate::marshal::TypeDesc {
                use $crate::marshal::user::__private as p;
                p::describe_user(stringify!($name), <$name>::__VSYNC_TYPE_ID, || {
                    p::Shape::Struct(p::Fields::Named(vec![
                        $((stringify!($f).to_owned(), p::field_desc(|s: &$name| &s.$f))),*
                    ]))
                })
            }
            #[inline]
            fn write_type_code<S: $crate::marshal::CodeSink + ?Sized>(s: &mut S) {
                $crate::marshal::user::__private::write_user_code(s, <$name>::__VSYNC_TYPE_ID)
            }
            #[inline]
            #[allow(unused_variables)]
            fn encode(&self, w: &mut $crate::marshal::Writer) {
                $($crate::marshal::Encode::encode(&self.$f, w);)*
            }
        }

        impl $crate::marshal::Marshal for $name {
            #[allow(unused_variables)]
            fn decode(
                r: &mut $crate::marshal::Reader<'_>,
            ) -> ::std::result::Result<Self, $crate::marshal::MarshalError> {
                r.nested(|r| {
                    ::std::result::Result::Ok($name {
                        $($f: $crate::marshal::Marshal::decode(r)?),*
                    })
                })
            }
        }
    };

    // A tuple struct; fields are listed by index: `struct Meters(0) type_id = 5`.
    (struct $name:ident ( $($i:tt),* $(,)? ) type_id = $id:expr $(,)?) => {
        $crate::__marshal_user_common!($name, $id);

        impl $crate::marshal::Encode for $name {
            fn type_desc() -> $crate::marshal::TypeDesc {
                use $crate::marshal::user::__private as p;
                p::describe_user(stringify!($name), <$name>::__VSYNC_TYPE_ID, || {
                    p::Shape::Struct(p::Fields::Unnamed(vec![
                        $(p::field_desc(|s: &$name| &s.$i)),*
                    ]))
                })
            }
            #[inline]
            fn write_type_code<S: $crate::marshal::CodeSink + ?Sized>(s: &mut S) {
                $crate::marshal::user::__private::write_user_code(s, <$name>::__VSYNC_TYPE_ID)
            }
            #[inline]
            #[allow(unused_variables)]
            fn encode(&self, w: &mut $crate::marshal::Writer) {
                $($crate::marshal::Encode::encode(&self.$i, w);)*
            }
        }

        impl $crate::marshal::Marshal for $name {
            #[allow(unused_variables)]
            fn decode(
                r: &mut $crate::marshal::Reader<'_>,
            ) -> ::std::result::Result<Self, $crate::marshal::MarshalError> {
                r.nested(|r| {
                    ::std::result::Result::Ok($name(
                        $($crate::marshal::user::__private::decode_field(r, $i)?),*
                    ))
                })
            }
        }
    };

    // A unit struct.
    (struct $name:ident type_id = $id:expr $(,)?) => {
        $crate::__marshal_user_common!($name, $id);

        impl $crate::marshal::Encode for $name {
            fn type_desc() -> $crate::marshal::TypeDesc {
                use $crate::marshal::user::__private as p;
                p::describe_user(stringify!($name), <$name>::__VSYNC_TYPE_ID, || {
                    p::Shape::Struct(p::Fields::Unit)
                })
            }
            #[inline]
            fn write_type_code<S: $crate::marshal::CodeSink + ?Sized>(s: &mut S) {
                $crate::marshal::user::__private::write_user_code(s, <$name>::__VSYNC_TYPE_ID)
            }
            #[inline]
            fn encode(&self, _w: &mut $crate::marshal::Writer) {}
        }

        impl $crate::marshal::Marshal for $name {
            fn decode(
                _r: &mut $crate::marshal::Reader<'_>,
            ) -> ::std::result::Result<Self, $crate::marshal::MarshalError> {
                ::std::result::Result::Ok($name)
            }
        }
    };

    // An enum: variants are unit, tuple `V(a, b)` (binding names) or struct `V { a, b }`.
    (enum $name:ident {
        $($v:ident $(( $($tf:ident),* $(,)? ))? $({ $($nf:ident),* $(,)? })?),* $(,)?
    } type_id = $id:expr $(,)?) => {
        $crate::__marshal_user_common!($name, $id);

        impl $crate::marshal::Encode for $name {
            #[allow(unreachable_patterns)]
            fn type_desc() -> $crate::marshal::TypeDesc {
                use $crate::marshal::user::__private as p;
                p::describe_user(stringify!($name), <$name>::__VSYNC_TYPE_ID, || {
                    p::Shape::Enum(vec![$(
                        p::Variant {
                            name: stringify!($v).to_owned(),
                            fields: p::pick([
                                $(p::Fields::Unnamed(p::tuple_descs(|s: &'static $name| match s {
                                    $name::$v($($tf),*) => ($($tf,)*),
                                    _ => unreachable!(),
                                })))?
                                $(p::named(
                                    &[$(stringify!($nf)),*],
                                    p::tuple_descs(|s: &'static $name| match s {
                                        $name::$v { $($nf),* } => ($($nf,)*),
                                        _ => unreachable!(),
                                    }),
                                ))?
                            ]),
                        }
                    ),*])
                })
            }
            #[inline]
            fn write_type_code<S: $crate::marshal::CodeSink + ?Sized>(s: &mut S) {
                $crate::marshal::user::__private::write_user_code(s, <$name>::__VSYNC_TYPE_ID)
            }
            #[allow(unused_variables)]
            fn encode(&self, w: &mut $crate::marshal::Writer) {
                #[allow(non_camel_case_types, clippy::enum_variant_names)]
                enum __Index { $($v),* }
                match self {
                    $($name::$v $(( $($tf),* ))? $({ $($nf),* })? => {
                        w.put_varint(__Index::$v as u64);
                        $($($crate::marshal::Encode::encode($tf, w);)*)?
                        $($($crate::marshal::Encode::encode($nf, w);)*)?
                    })*
                }
            }
        }

        impl $crate::marshal::Marshal for $name {
            fn decode(
                r: &mut $crate::marshal::Reader<'_>,
            ) -> ::std::result::Result<Self, $crate::marshal::MarshalError> {
                #[allow(non_camel_case_types, clippy::enum_variant_names)]
                enum __Index { $($v),* }
                r.nested(|r| {
                    let index = r.get_varint()?;
                    $(if index == __Index::$v as u64 {
                        return ::std::result::Result::Ok($name::$v
                            $(( $($crate::marshal::user::__private::decode_field(
                                r, stringify!($tf))?),* ))?
                            $({ $($nf: $crate::marshal::Marshal::decode(r)?),* })?
                        );
                    })*
                    ::std::result::Result::Err($crate::marshal::MarshalError::UnknownVariant {
                        ty: stringify!($name),
                        index,
                    })
                })
            }
        }
    };
}

/// Declares a struct with named fields and implements [`Encode`](crate::marshal::Encode) and
/// [`Marshal`](crate::marshal::Marshal) for it with a type id.
///
/// ```
/// use vsync::marshal::{Encode, Marshal};
///
/// vsync::marshal_struct! {
///     /// A point.
///     #[derive(Clone, Debug, PartialEq)]
///     pub struct Point { pub x: i32, pub y: i32 }
///     type_id = 1001
/// }
///
/// assert_eq!(Point::type_desc().to_string(), "Point#1001");
/// assert_eq!(format!("{:#}", Point::type_desc()), "Point#1001{x:i32,y:i32}");
/// let p = Point { x: 1, y: -2 };
/// assert_eq!(p.to_bytes(), [2, 3]);
/// assert_eq!(Point::from_bytes(&[2, 3]).unwrap(), p);
/// ```
#[macro_export]
macro_rules! marshal_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty),* $(,)?
        }
        type_id = $id:expr $(;)?
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty),*
        }
        $crate::impl_marshal! { struct $name { $($field),* } type_id = $id }
    };
}

/// The type id constant and its compile-time range check.
#[doc(hidden)]
#[macro_export]
macro_rules! __marshal_user_common {
    ($name:ident, $id:expr) => {
        impl $name {
            #[doc(hidden)]
            pub const __VSYNC_TYPE_ID: $crate::marshal::TypeId = $id;
        }
        const _: () = assert!(
            <$name>::__VSYNC_TYPE_ID < *$crate::marshal::RESERVED_TYPE_IDS.start(),
            "type ids 0xffff0000 and above are reserved for vsync"
        );
    };
}

#[cfg(test)]
mod tests {
    use crate::marshal::{Address, Encode, Marshal, MarshalError, TypeDesc};
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq)]
    struct Node {
        value: i32,
        children: Vec<Node>,
    }
    crate::impl_marshal! { struct Node { value, children } type_id = 50 }

    #[derive(Debug, PartialEq)]
    enum Tree {
        Leaf(i32),
        Fork(Box<Tree>, Box<Tree>),
        Named { label: String, inner: Box<Tree> },
        Nil,
    }
    crate::impl_marshal! {
        enum Tree { Leaf(v), Fork(l, r), Named { label, inner }, Nil } type_id = 51
    }

    crate::marshal_struct! {
        #[derive(Debug, PartialEq, Default)]
        struct Inventory {
            owner: Address,
            items: BTreeMap<String, (u32, Option<f64>)>,
        }
        type_id = 52
    }

    #[derive(Debug, PartialEq)]
    struct Marker;
    crate::impl_marshal! { struct Marker type_id = 53 }

    #[test]
    fn recursive_struct_describes_and_round_trips() {
        assert_eq!(
            format!("{:#}", Node::type_desc()),
            "Node#50{value:i32,children:Vec<Node#50>}"
        );
        let n = Node {
            value: 1,
            children: vec![Node {
                value: 2,
                children: vec![],
            }],
        };
        assert_eq!(Node::from_bytes(&n.to_bytes()).unwrap(), n);
    }

    #[test]
    fn recursive_enum() {
        assert_eq!(
            format!("{:#}", Tree::type_desc()),
            "Tree#51{Leaf(i32)|Fork(Tree#51,Tree#51)|Named{label:String,inner:Tree#51}|Nil}"
        );
        let t = Tree::Fork(
            Box::new(Tree::Leaf(3)),
            Box::new(Tree::Named {
                label: "x".into(),
                inner: Box::new(Tree::Nil),
            }),
        );
        let b = t.to_bytes();
        assert_eq!(b[0], 1);
        assert_eq!(Tree::from_bytes(&b).unwrap(), t);
        assert_eq!(
            Tree::from_bytes(&[9]),
            Err(MarshalError::UnknownVariant {
                ty: "Tree",
                index: 9
            })
        );
    }

    #[test]
    fn hostile_recursion_is_bounded() {
        // Fork(Fork(Fork(...))) 10_000 deep: each level is one byte.
        let b = vec![1u8; 10_000];
        assert_eq!(Tree::from_bytes(&b), Err(MarshalError::DepthLimit(100)));
    }

    #[test]
    fn struct_with_map_and_unit() {
        let mut inv = Inventory {
            owner: Address::new(1, 2),
            ..Default::default()
        };
        inv.items.insert("bolt".into(), (7, Some(0.5)));
        inv.items.insert("nut".into(), (9, None));
        assert_eq!(Inventory::from_bytes(&inv.to_bytes()).unwrap(), inv);
        assert_eq!(
            format!("{:#}", Inventory::type_desc()),
            "Inventory#52{owner:Address,items:Map<String, (u32, Option<f64>)>}"
        );
        assert!(Marker.to_bytes().is_empty());
        assert_eq!(Marker::from_bytes(&[]).unwrap(), Marker);
        assert_eq!(format!("{:#}", Marker::type_desc()), "Marker#53{}");
        let mut code = Vec::new();
        Inventory::write_type_code(&mut code);
        assert_eq!(code, Inventory::type_desc().code());
        assert!(matches!(Inventory::type_desc(), TypeDesc::User(_)));
    }
}
