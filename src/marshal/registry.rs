//! [`TypeRegistry`]: the process's user types by id and by name.
//!
//! Registering a type registers every user type reachable from its fields too. A registry
//! refuses a second type with an id or a name already bound to another definition, and ids
//! reserved for vsync. Registration of the identical definition again is a no-op.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::desc::{TypeDesc, TypeId, UserType, RESERVED_TYPE_IDS};
use super::traits::Encode;
use super::wire::Writer;

/// Why a type could not be registered, or a signature set not built.
///
/// ```
/// use vsync::marshal::{RegistryError, TypeRegistry};
/// let mut reg = TypeRegistry::new();
/// assert!(matches!(reg.register::<u32>(), Err(RegistryError::NotAUserType(_))));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryError {
    /// `register::<T>()` with a `T` that is not a user type.
    NotAUserType(TypeDesc),
    /// A user type claims an id reserved for vsync.
    ReservedId(Arc<UserType>),
    /// Two different definitions claim the same id.
    DuplicateId {
        /// The definition registered first.
        existing: Arc<UserType>,
        /// The one refused.
        new: Arc<UserType>,
    },
    /// Two ids claim the same name.
    DuplicateName {
        /// The name.
        name: String,
        /// The id registered first.
        existing: TypeId,
        /// The id refused.
        new: TypeId,
    },
    /// A handler signature uses a user type that was not registered.
    Unregistered {
        /// The type.
        ty: Arc<UserType>,
        /// Where it is used.
        used_in: String,
    },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::NotAUserType(t) => write!(f, "{t} is not a user type"),
            RegistryError::ReservedId(u) => write!(
                f,
                "type {} uses id {} from the range reserved for vsync (0xffff0000..)",
                u.name, u.id
            ),
            RegistryError::DuplicateId { existing, new } => write!(
                f,
                "type id {} is already bound to {existing:#}; cannot bind it to {new:#}",
                existing.id
            ),
            RegistryError::DuplicateName {
                name,
                existing,
                new,
            } => write!(
                f,
                "type name {name} is already registered with id {existing}; cannot register it with id {new}"
            ),
            RegistryError::Unregistered { ty, used_in } => {
                write!(f, "type {ty:#} used in {used_in} is not registered")
            }
        }
    }
}

impl std::error::Error for RegistryError {}

/// The canonical encoding of a definition: id, name, shape (field types as type codes).
pub(crate) fn definition_bytes(u: &UserType) -> Vec<u8> {
    let mut w = Writer::new();
    w.put_varint(u.id as u64);
    super::desc::write_name(&mut w, &u.name);
    match &u.shape {
        Some(s) => s.write(&mut w),
        None => w.put_u8(0xff),
    }
    w.into_vec()
}

/// Collects the definitions (field types shallow) of every user type reachable from `desc`.
pub(crate) fn reachable_definitions(desc: &TypeDesc, out: &mut Vec<Arc<UserType>>) {
    desc.visit_users(&mut |u| {
        if u.shape.is_some() {
            out.push(Arc::new(u.definition()));
        }
    });
}

/// User types by id and by name.
///
/// ```
/// use vsync::marshal::{RegistryError, TypeRegistry};
///
/// vsync::marshal_struct! { pub struct Point { pub x: i32, pub y: i32 } type_id = 1001 }
/// vsync::marshal_struct! { pub struct Other { pub a: u8 } type_id = 1001 }
///
/// let mut reg = TypeRegistry::new();
/// reg.register::<Point>().unwrap();
/// reg.register::<Point>().unwrap(); // the same definition again is fine
/// let err = reg.register::<Other>().unwrap_err();
/// assert!(matches!(err, RegistryError::DuplicateId { .. }));
/// assert_eq!(
///     err.to_string(),
///     "type id 1001 is already bound to Point#1001{x:i32,y:i32}; cannot bind it to Other#1001{a:u8}"
/// );
/// assert_eq!(reg.by_name("Point").unwrap().id, 1001);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeRegistry {
    by_id: BTreeMap<TypeId, Arc<UserType>>,
    by_name: BTreeMap<String, TypeId>,
}

impl TypeRegistry {
    /// An empty registry.
    ///
    /// ```
    /// use vsync::marshal::TypeRegistry;
    /// assert!(TypeRegistry::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers user type `T` and every user type reachable from its fields. Nothing is
    /// registered if any of them conflicts.
    ///
    /// ```
    /// use vsync::marshal::TypeRegistry;
    /// vsync::marshal_struct! { pub struct Line { pub from: Pt, pub to: Pt } type_id = 1002 }
    /// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
    /// let mut reg = TypeRegistry::new();
    /// reg.register::<Line>().unwrap();
    /// assert_eq!(reg.len(), 2); // Pt came with Line
    /// ```
    pub fn register<T: Encode + ?Sized>(&mut self) -> Result<(), RegistryError> {
        let desc = T::type_desc();
        match &desc {
            TypeDesc::User(u) if RESERVED_TYPE_IDS.contains(&u.id) => {
                Err(RegistryError::ReservedId(u.clone()))
            }
            TypeDesc::User(_) => self.register_desc(&desc),
            _ => Err(RegistryError::NotAUserType(desc)),
        }
    }

    /// Registers every (non-reserved) user type reachable from `desc`, atomically.
    ///
    /// ```
    /// use vsync::marshal::{Encode, TypeRegistry};
    /// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
    /// let mut reg = TypeRegistry::new();
    /// reg.register_desc(&Vec::<Pt>::type_desc()).unwrap();
    /// assert!(reg.get(1001).is_some());
    /// ```
    pub fn register_desc(&mut self, desc: &TypeDesc) -> Result<(), RegistryError> {
        let mut defs = Vec::new();
        reachable_definitions(desc, &mut defs);
        defs.retain(|d| !RESERVED_TYPE_IDS.contains(&d.id));
        // Validate against the registry and among themselves first.
        let mut staged = self.clone();
        for d in defs {
            staged.insert(d)?;
        }
        *self = staged;
        Ok(())
    }

    fn insert(&mut self, d: Arc<UserType>) -> Result<(), RegistryError> {
        if let Some(existing) = self.by_id.get(&d.id) {
            if definition_bytes(existing) == definition_bytes(&d) {
                return Ok(());
            }
            return Err(RegistryError::DuplicateId {
                existing: existing.clone(),
                new: d,
            });
        }
        if let Some(&existing) = self.by_name.get(&d.name) {
            return Err(RegistryError::DuplicateName {
                name: d.name.clone(),
                existing,
                new: d.id,
            });
        }
        self.by_name.insert(d.name.clone(), d.id);
        self.by_id.insert(d.id, d);
        Ok(())
    }

    /// Checks that every user type reachable from `desc` is registered with the same
    /// definition; `used_in` names the place for the error message.
    ///
    /// ```
    /// use vsync::marshal::{Encode, TypeRegistry};
    /// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
    /// let mut reg = TypeRegistry::new();
    /// assert!(reg.check(&Pt::type_desc(), "handler 3").is_err());
    /// reg.register::<Pt>().unwrap();
    /// reg.check(&Pt::type_desc(), "handler 3").unwrap();
    /// ```
    pub fn check(&self, desc: &TypeDesc, used_in: &str) -> Result<(), RegistryError> {
        let mut defs = Vec::new();
        reachable_definitions(desc, &mut defs);
        for d in defs {
            if RESERVED_TYPE_IDS.contains(&d.id) {
                continue;
            }
            match self.by_id.get(&d.id) {
                None => {
                    return Err(RegistryError::Unregistered {
                        ty: d,
                        used_in: used_in.to_owned(),
                    })
                }
                Some(existing) if definition_bytes(existing) != definition_bytes(&d) => {
                    return Err(RegistryError::DuplicateId {
                        existing: existing.clone(),
                        new: d,
                    })
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The definition registered under `id` (field types are references).
    ///
    /// ```
    /// use vsync::marshal::TypeRegistry;
    /// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
    /// let mut reg = TypeRegistry::new();
    /// reg.register::<Pt>().unwrap();
    /// assert_eq!(reg.get(1001).unwrap().name, "Pt");
    /// assert!(reg.get(1002).is_none());
    /// ```
    pub fn get(&self, id: TypeId) -> Option<&Arc<UserType>> {
        self.by_id.get(&id)
    }

    /// The definition registered under `name`.
    ///
    /// ```
    /// use vsync::marshal::TypeRegistry;
    /// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
    /// let mut reg = TypeRegistry::new();
    /// reg.register::<Pt>().unwrap();
    /// assert_eq!(reg.by_name("Pt").unwrap().id, 1001);
    /// ```
    pub fn by_name(&self, name: &str) -> Option<&Arc<UserType>> {
        self.by_name.get(name).and_then(|id| self.by_id.get(id))
    }

    /// All definitions, by increasing id.
    ///
    /// ```
    /// use vsync::marshal::TypeRegistry;
    /// vsync::marshal_struct! { pub struct A { pub x: u8 } type_id = 1002 }
    /// vsync::marshal_struct! { pub struct B { pub y: u8 } type_id = 1001 }
    /// let mut reg = TypeRegistry::new();
    /// reg.register::<A>().unwrap();
    /// reg.register::<B>().unwrap();
    /// assert_eq!(reg.iter().map(|t| t.id).collect::<Vec<_>>(), [1001, 1002]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = &Arc<UserType>> {
        self.by_id.values()
    }

    /// The number of registered types.
    ///
    /// ```
    /// use vsync::marshal::TypeRegistry;
    /// vsync::marshal_struct! { pub struct Pt { pub x: i32, pub y: i32 } type_id = 1001 }
    /// let mut reg = TypeRegistry::new();
    /// reg.register::<Pt>().unwrap();
    /// assert_eq!(reg.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True if nothing is registered.
    ///
    /// ```
    /// use vsync::marshal::TypeRegistry;
    /// let reg = TypeRegistry::new();
    /// assert!(reg.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::marshal_struct! { struct Inner { v: u8 } type_id = 70 }
    crate::marshal_struct! { struct Outer { inner: Vec<Inner>, name: String } type_id = 71 }
    crate::marshal_struct! { struct Impostor { v: u16 } type_id = 70 }
    mod other {
        crate::marshal_struct! { pub struct Inner { pub v: u8 } type_id = 72 }
    }

    #[test]
    fn registers_reachable_types() {
        let mut reg = TypeRegistry::new();
        reg.register::<Outer>().unwrap();
        assert_eq!(reg.len(), 2);
        assert_eq!(
            format!("{:#}", reg.get(71).unwrap()),
            "Outer#71{inner:Vec<Inner#70>,name:String}"
        );
        assert!(reg.by_name("Inner").is_some());
        assert_eq!(
            reg.register::<u32>(),
            Err(RegistryError::NotAUserType(TypeDesc::U32))
        );
    }

    #[test]
    fn conflicts_are_refused_atomically() {
        let mut reg = TypeRegistry::new();
        reg.register::<Impostor>().unwrap();
        let before = reg.clone();
        let e = reg.register::<Outer>().unwrap_err();
        assert!(matches!(e, RegistryError::DuplicateId { .. }), "{e}");
        assert_eq!(reg, before, "nothing of Outer was registered");
        let e = {
            let mut r = TypeRegistry::new();
            r.register::<Inner>().unwrap();
            r.register::<other::Inner>().unwrap_err()
        };
        assert_eq!(
            e.to_string(),
            "type name Inner is already registered with id 70; cannot register it with id 72"
        );
    }

    #[test]
    fn check_reports_unregistered() {
        let reg = TypeRegistry::new();
        let e = reg
            .check(&<Vec<Inner>>::type_desc(), "code 3 (Vec<Inner#70>)")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "type Inner#70{v:u8} used in code 3 (Vec<Inner#70>) is not registered"
        );
    }
}
