//! [`Encode`]/[`Marshal`] for the scalar types, strings and smart pointers.
//!
//! * `bool`: one byte, 0 or 1. `u8`/`i8`: one raw byte.
//! * `u16`..`u128`, `usize`: LEB128 varint (`usize` travels as `u64`).
//! * `i16`..`i128`, `isize`: zigzag, then varint (`isize` travels as `i64`).
//! * `f32`/`f64`: IEEE-754 bits, little-endian (NaN payloads preserved).
//! * `char`: its code point as a varint.
//! * `String`/`&str`: byte length (varint), then UTF-8.
//! * `&T`, `Box<T>`, `Arc<T>`: exactly as `T`.

use std::sync::Arc;

use super::desc::{tag, TypeDesc};
use super::error::MarshalError;
use super::traits::{Encode, Marshal};
use super::wire::{CodeSink, Reader, Writer};

impl Encode for bool {
    fn type_desc() -> TypeDesc {
        TypeDesc::Bool
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(tag::BOOL)
    }
    #[inline]
    fn encode(&self, w: &mut Writer) {
        w.put_u8(*self as u8)
    }
}

impl Marshal for bool {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        match r.get_u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(MarshalError::InvalidBool(b)),
        }
    }
}

impl Encode for u8 {
    fn type_desc() -> TypeDesc {
        TypeDesc::U8
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(tag::U8)
    }
    #[inline]
    fn encode(&self, w: &mut Writer) {
        w.put_u8(*self)
    }
    #[inline]
    fn encode_slice(items: &[Self], w: &mut Writer) {
        w.put_bytes(items)
    }
}

impl Marshal for u8 {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        r.get_u8()
    }
    #[inline]
    fn decode_vec(r: &mut Reader<'_>, n: usize) -> Result<Vec<Self>, MarshalError> {
        Ok(r.take(n)?.to_vec())
    }
}

impl Encode for i8 {
    fn type_desc() -> TypeDesc {
        TypeDesc::I8
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(tag::I8)
    }
    #[inline]
    fn encode(&self, w: &mut Writer) {
        w.put_u8(*self as u8)
    }
    fn encode_slice(items: &[Self], w: &mut Writer) {
        w.vec_mut().extend(items.iter().map(|&b| b as u8))
    }
}

impl Marshal for i8 {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        Ok(r.get_u8()? as i8)
    }
    fn decode_vec(r: &mut Reader<'_>, n: usize) -> Result<Vec<Self>, MarshalError> {
        Ok(r.take(n)?.iter().map(|&b| b as i8).collect())
    }
}

macro_rules! unsigned {
    ($($t:ty => $tag:ident),* $(,)?) => {$(
        impl Encode for $t {
            fn type_desc() -> TypeDesc {
                TypeDesc::$tag
            }
            #[inline]
            fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
                s.put(tag::$tag)
            }
            #[inline]
            fn encode(&self, w: &mut Writer) {
                w.put_varint(*self as u64)
            }
        }

        impl Marshal for $t {
            #[inline]
            fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
                let v = r.get_varint()?;
                if v > <$t>::MAX as u64 {
                    return Err(MarshalError::OutOfRange(stringify!($t)));
                }
                Ok(v as $t)
            }
        }
    )*};
}

unsigned!(u16 => U16, u32 => U32, u64 => U64, usize => U64);

macro_rules! signed {
    ($($t:ty => $tag:ident),* $(,)?) => {$(
        impl Encode for $t {
            fn type_desc() -> TypeDesc {
                TypeDesc::$tag
            }
            #[inline]
            fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
                s.put(tag::$tag)
            }
            #[inline]
            fn encode(&self, w: &mut Writer) {
                let v = *self as i64;
                w.put_varint(((v << 1) ^ (v >> 63)) as u64)
            }
        }

        impl Marshal for $t {
            #[inline]
            fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
                let u = r.get_varint()?;
                let v = ((u >> 1) as i64) ^ -((u & 1) as i64);
                if v < <$t>::MIN as i64 || v > <$t>::MAX as i64 {
                    return Err(MarshalError::OutOfRange(stringify!($t)));
                }
                Ok(v as $t)
            }
        }
    )*};
}

signed!(i16 => I16, i32 => I32, i64 => I64, isize => I64);

impl Encode for u128 {
    fn type_desc() -> TypeDesc {
        TypeDesc::U128
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(tag::U128)
    }
    fn encode(&self, w: &mut Writer) {
        w.put_varint128(*self)
    }
}

impl Marshal for u128 {
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        r.get_varint128()
    }
}

impl Encode for i128 {
    fn type_desc() -> TypeDesc {
        TypeDesc::I128
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(tag::I128)
    }
    fn encode(&self, w: &mut Writer) {
        w.put_varint128(((*self << 1) ^ (*self >> 127)) as u128)
    }
}

impl Marshal for i128 {
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        let u = r.get_varint128()?;
        Ok(((u >> 1) as i128) ^ -((u & 1) as i128))
    }
}

macro_rules! float {
    ($($t:ty => $tag:ident),* $(,)?) => {$(
        impl Encode for $t {
            fn type_desc() -> TypeDesc {
                TypeDesc::$tag
            }
            #[inline]
            fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
                s.put(tag::$tag)
            }
            #[inline]
            fn encode(&self, w: &mut Writer) {
                w.put_bytes(&self.to_le_bytes())
            }
        }

        impl Marshal for $t {
            #[inline]
            fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
                Ok(<$t>::from_le_bytes(r.take_array()?))
            }
        }
    )*};
}

float!(f32 => F32, f64 => F64);

impl Encode for char {
    fn type_desc() -> TypeDesc {
        TypeDesc::Char
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(tag::CHAR)
    }
    fn encode(&self, w: &mut Writer) {
        w.put_varint(*self as u64)
    }
}

impl Marshal for char {
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        let v = r.get_varint()?;
        let c = u32::try_from(v).map_err(|_| MarshalError::OutOfRange("char"))?;
        char::from_u32(c).ok_or(MarshalError::InvalidChar(c))
    }
}

impl Encode for str {
    fn type_desc() -> TypeDesc {
        TypeDesc::String
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(tag::STRING)
    }
    #[inline]
    fn encode(&self, w: &mut Writer) {
        w.put_len(self.len());
        w.put_bytes(self.as_bytes());
    }
}

impl Encode for String {
    fn type_desc() -> TypeDesc {
        TypeDesc::String
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        s.put(tag::STRING)
    }
    #[inline]
    fn encode(&self, w: &mut Writer) {
        self.as_str().encode(w)
    }
}

impl Marshal for String {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
        let n = r.get_len()?;
        let b = r.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| MarshalError::InvalidUtf8)
    }
}

impl<T: Encode + ?Sized> Encode for &T {
    fn type_desc() -> TypeDesc {
        T::type_desc()
    }
    #[inline]
    fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
        T::write_type_code(s)
    }
    #[inline]
    fn encode(&self, w: &mut Writer) {
        (**self).encode(w)
    }
}

macro_rules! pointer {
    ($($p:ident),*) => {$(
        impl<T: Encode + ?Sized> Encode for $p<T> {
            fn type_desc() -> TypeDesc {
                T::type_desc()
            }
            #[inline]
            fn write_type_code<S: CodeSink + ?Sized>(s: &mut S) {
                T::write_type_code(s)
            }
            #[inline]
            fn encode(&self, w: &mut Writer) {
                (**self).encode(w)
            }
        }

        impl<T: Marshal> Marshal for $p<T> {
            #[inline]
            fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
                T::decode(r).map($p::new)
            }
        }
    )*};
}

pointer!(Box, Arc);

#[cfg(test)]
mod tests {
    use super::*;

    fn rt<T: Marshal + PartialEq + std::fmt::Debug>(v: T) -> Vec<u8> {
        let b = v.to_bytes();
        assert_eq!(T::from_bytes(&b).unwrap(), v);
        let mut code = Vec::new();
        T::write_type_code(&mut code);
        assert_eq!(code, T::type_desc().code());
        b
    }

    #[test]
    fn scalars_round_trip_with_expected_bytes() {
        assert_eq!(rt(true), [1]);
        assert_eq!(rt(0u8), [0]);
        assert_eq!(rt(-1i8), [0xff]);
        assert_eq!(rt(300u16), [0xac, 0x02]);
        assert_eq!(rt(-1i32), [0x01]);
        assert_eq!(rt(1i32), [0x02]);
        assert_eq!(rt(i64::MIN).len(), 10);
        assert_eq!(rt(u64::MAX).len(), 10);
        assert_eq!(rt(u128::MAX).len(), 19);
        rt(i128::MIN);
        rt(i128::MAX);
        rt(usize::MAX);
        rt(isize::MIN);
        assert_eq!(rt(1.5f32), 1.5f32.to_le_bytes());
        rt(f64::NEG_INFINITY);
        assert_eq!(rt('é'), [0xe9, 0x01]);
        assert_eq!(rt(String::from("hé")), [3, b'h', 0xc3, 0xa9]);
        rt(Box::new(7u32));
        rt(Arc::new(String::new()));
    }

    #[test]
    fn nan_bits_preserved() {
        let nan = f64::from_bits(0x7ff8_0000_dead_beef);
        let back = f64::from_bytes(&nan.to_bytes()).unwrap();
        assert_eq!(back.to_bits(), nan.to_bits());
    }

    #[test]
    fn range_and_validity_errors() {
        assert_eq!(
            u16::from_bytes(&70000u32.to_bytes()),
            Err(MarshalError::OutOfRange("u16"))
        );
        assert_eq!(i8::from_bytes(&[1, 2]), Err(MarshalError::TrailingBytes(1)));
        assert_eq!(
            i16::from_bytes(&(-40000i32).to_bytes()),
            Err(MarshalError::OutOfRange("i16"))
        );
        assert_eq!(
            char::from_bytes(&0xd800u32.to_bytes()),
            Err(MarshalError::InvalidChar(0xd800))
        );
        assert_eq!(
            String::from_bytes(&[2, 0xff, 0xfe]),
            Err(MarshalError::InvalidUtf8)
        );
        assert!(matches!(
            String::from_bytes(&[5, b'a']),
            Err(MarshalError::Truncated { .. })
        ));
        // usize and u64 interoperate; str encodes like String.
        assert_eq!(u64::from_bytes(&7usize.to_bytes()), Ok(7));
        assert_eq!("x".to_bytes(), String::from("x").to_bytes());
    }
}
