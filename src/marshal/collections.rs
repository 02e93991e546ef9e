//! [`Encode`]/[`Marshal`] for sequences, arrays, `Option` and maps.
//!
//! * `Vec<T>`/`&[T]`: element count (varint), then the elements; for `Vec<u8>`/`Vec<i8>`
//!   the elements are the raw bytes (compact byte vectors, one copy each way).
//! * `[T; N]`: the N elements, no count (N is part of the type).
//! * `Option<T>`: tag byte 0 (None) or 1 (Some) then the value.
//! * `BTreeMap<K, V>`, `HashMap<K, V>`: entry count, then key/value pairs. A `BTreeMap` writes
//!   its entries in key order; a `HashMap` in the byte order of the encoded keys, so equal
//!   maps always encode identically. Both have the descriptor `Map<K, V>` and read each
//!   other's encodings; decoding rejects a repeated key.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};

use super::desc::{tag, TypeDesc};
use super::error::MarshalError;
use super::traits::{Encode, Marshal};
use super::wire::{CodeSink, Reader, Writer};

impl<T: Encode> Encode for [T] {
    fn type_desc() -> TypeDesc {
        TypeDesc::vec(T::type_desc())
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(tag::VEC);
        T::write_type_code(s)
    }
    #[inline]
    fn encode(&self, w: &mut Writer) {
        w.put_len(self.len());
        T::encode_slice(self, w)
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn type_desc() -> TypeDesc {
        TypeDesc::vec(T::type_desc())
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(tag::VEC);
        T::write_type_code(s)
    }
    #[inline]
    fn encode(&self, w: &mut Writer) {
        self.as_slice().encode(w)
    }
}

impl<T: Marshal> Marshal for Vec<T> {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        let n = r.get_len()?;
        T::decode_vec(r, n)
    }
}

impl<T: Encode, const N: usize> Encode for [T; N] {
    fn type_desc() -> TypeDesc {
        TypeDesc::array(T::type_desc(), N)
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(tag::ARRAY);
        s.put_varint(N as u64);
        T::write_type_code(s)
    }
    #[inline]
    fn encode(&self, w: &mut Writer) {
        T::encode_slice(self, w)
    }
}

impl<T: Marshal, const N: usize> Marshal for [T; N] {
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        let v = T::decode_vec(r, N)?;
        v.try_into()
            .map_err(|_| MarshalError::Invalid("array length".into()))
    }
}

impl<T: Encode> Encode for Option<T> {
    fn type_desc() -> TypeDesc {
        TypeDesc::option(T::type_desc())
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(tag::OPTION);
        T::write_type_code(s)
    }
    #[inline]
    fn encode(&self, w: &mut Writer) {
        match self {
            None => w.put_u8(0),
            Some(v) => {
                w.put_u8(1);
                v.encode(w)
            }
        }
    }
}

impl<T: Marshal> Marshal for Option<T> {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        match r.get_u8()? {
            0 => Ok(None),
            1 => T::decode(r).map(Some),
            t => Err(MarshalError::InvalidOptionTag(t)),
        }
    }
}

fn write_map_code<K: Encode, V: Encode, S: CodeSink + ?Sized>(s: &mut S) {
    s.put(tag::MAP);
    K::write_type_code(s);
    V::write_type_code(s)
}

/// Decodes `n` entries, calling `insert` (which reports whether the key was new).
fn decode_entries<K: Marshal, V: Marshal>(
    r: &mut Reader<'_>,
    mut insert: impl FnMut(K, V) -> bool,
) -> Result<(), MarshalError> {
    let n = r.get_len()?;
    for _ in 0..n {
        let before = r.position();
        let k = K::decode(r)?;
        let v = V::decode(r)?;
        if r.position() == before {
            r.charge_empty_element()?;
        }
        if !insert(k, v) {
            return Err(MarshalError::DuplicateKey);
        }
    }
    Ok(())
}

impl<K: Encode, V: Encode> Encode for BTreeMap<K, V> {
    fn type_desc() -> TypeDesc {
        TypeDesc::map(K::type_desc(), V::type_desc())
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        write_map_code::<K, V, S>(s)
    }
    fn encode(&self, w: &mut Writer) {
        w.put_len(self.len());
        for (k, v) in self {
            k.encode(w);
            v.encode(w);
        }
    }
}

impl<K: Marshal + Ord, V: Marshal> Marshal for BTreeMap<K, V> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        let mut m = BTreeMap::new();
        decode_entries(r, |k, v| m.insert(k, v).is_none())?;
        Ok(m)
    }
}

impl<K: Encode, V: Encode, S> Encode for HashMap<K, V, S> {
    fn type_desc() -> TypeDesc {
        TypeDesc::map(K::type_desc(), V::type_desc())
    }
    #[inline]
    fn write_type_code<C: CodeSink + ?Sized>(s: &mut C) {
        write_map_code::<K, V, C>(s)
    }
    fn encode(&self, w: &mut Writer) {
        w.put_len(self.len());
        if self.len() <= 1 {
            for (k, v) in self {
                k.encode(w);
                v.encode(w);
            }
            return;
        }
        // Encode the keys once, then emit entries in the byte order of the encoded keys.
        let mut keys = Writer::with_capacity(self.len() * 8);
        let mut entries: Vec<(usize, usize, &V)> = Vec::with_capacity(self.len());
        for (k, v) in self {
            let start = keys.len();
            k.encode(&mut keys);
            entries.push((start, keys.len(), v));
        }
        let kb = keys.as_bytes();
        entries.sort_unstable_by(|a, b| kb[a.0..a.1].cmp(&kb[b.0..b.1]));
        for (s, e, v) in entries {
            w.put_bytes(&kb[s..e]);
            v.encode(w);
        }
    }
}

impl<K, V, S> Marshal for HashMap<K, V, S>
where
    K: Marshal + Eq + Hash,
    V: Marshal,
    S: BuildHasher + Default,
{
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        let mut m = HashMap::with_hasher(S::default());
        decode_entries(r, |k, v| m.insert(k, v).is_none())?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_compact() {
        let v = vec![9u8; 5];
        assert_eq!(v.to_bytes(), [5, 9, 9, 9, 9, 9]);
        assert_eq!(v.as_slice().to_bytes(), v.to_bytes());
        assert_eq!(Vec::<u8>::from_bytes(&v.to_bytes()).unwrap(), v);
        let a = [1u8, 2, 3];
        assert_eq!(a.to_bytes(), [1, 2, 3]);
        assert_eq!(<[u8; 3]>::from_bytes(&[1, 2, 3]).unwrap(), a);
        assert_eq!(
            Vec::<i8>::from_bytes(&vec![-1i8, 2].to_bytes()).unwrap(),
            [-1, 2]
        );
    }

    #[test]
    fn hostile_lengths_fail_fast() {
        // 2^40 strings claimed, two bytes present.
        let mut b = Vec::new();
        crate::marshal::wire::put_varint(&mut b, 1 << 40);
        b.extend([0, 0]);
        assert!(matches!(
            Vec::<String>::from_bytes(&b),
            Err(MarshalError::LengthLimit { .. })
        ));
        let mut b = Vec::new();
        crate::marshal::wire::put_varint(&mut b, 1 << 27);
        assert!(matches!(
            Vec::<u64>::from_bytes(&b),
            Err(MarshalError::Truncated { .. })
        ));
        assert!(matches!(
            Vec::<Vec<u8>>::from_bytes(&b),
            Err(MarshalError::Truncated { .. })
        ));
        // Zero-byte elements are bounded by the work limit.
        assert!(matches!(
            Vec::<[u32; 0]>::from_bytes(&b),
            Err(MarshalError::WorkLimit(_))
        ));
    }

    #[test]
    fn options_and_maps() {
        assert_eq!(Some(3u8).to_bytes(), [1, 3]);
        assert_eq!(None::<u8>.to_bytes(), [0]);
        assert_eq!(
            Option::<u8>::from_bytes(&[2]),
            Err(MarshalError::InvalidOptionTag(2))
        );
        let mut h: HashMap<String, i32> = HashMap::new();
        let mut t = BTreeMap::new();
        for i in 0..50 {
            h.insert(format!("k{i}"), i);
            t.insert(format!("k{i}"), i);
        }
        // Same contents: the hash map's order is by encoded key, so identical bytes
        // regardless of hashing; both decode each other's encoding.
        let hb = h.to_bytes();
        let h2: HashMap<String, i32> = h.clone().into_iter().collect();
        assert_eq!(h2.to_bytes(), hb);
        assert_eq!(
            HashMap::<String, i32>::from_bytes(&t.to_bytes()).unwrap(),
            h
        );
        assert_eq!(BTreeMap::<String, i32>::from_bytes(&hb).unwrap(), t);
        // A repeated key is rejected.
        let dup = [2u8, 1, 10, 1, 20];
        assert_eq!(
            BTreeMap::<u8, u8>::from_bytes(&dup),
            Err(MarshalError::DuplicateKey)
        );
        assert_eq!(
            HashMap::<u8, u8>::from_bytes(&dup),
            Err(MarshalError::DuplicateKey)
        );
    }
}
