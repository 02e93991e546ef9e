//! [`Encode`]/[`Marshal`] for tuples of 1 to 12 elements: the elements' encodings one after
//! the other, no header. (The unit type `()` is not a value type; a handler without
//! arguments has the empty [`Signature`](super::Signature) instead.)

use super::desc::{tag, TypeDesc};
use super::error::MarshalError;
use super::traits::{Encode, Marshal};
use super::wire::{CodeSink, Reader, Writer};

macro_rules! tuple {
    ($n:expr; $($t:ident $i:tt),+) => {
        impl<$($t: Encode),+> Encode for ($($t,)+) {
            fn type_desc() -> TypeDesc {
                TypeDesc::Tuple(vec![$($t::type_desc()),+])
            }
            #[inline]
            fn write_type_code<Sink: CodeSink + ?Sized>(s: &mut Sink) {
                s.put(tag::TUPLE);
                s.put_varint($n);
                $($t::write_type_code(s);)+
            }
            #[inline]
            fn encode(&self, w: &mut Writer) {
                $(self.$i.encode(w);)+
            }
        }

        impl<$($t: Marshal),+> Marshal for ($($t,)+) {
            #[inline]
            fn decode(r: &mut Reader<'_>) -> Result<Self, MarshalError> {
                Ok(($($t::decode(r)?,)+))
            }
        }
    };
}

tuple!(1; A 0);
tuple!(2; A 0, B 1);
tuple!(3; A 0, B 1, C 2);
tuple!(4; A 0, B 1, C 2, D 3);
tuple!(5; A 0, B 1, C 2, D 3, E 4);
tuple!(6; A 0, B 1, C 2, D 3, E 4, F 5);
tuple!(7; A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple!(8; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple!(9; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple!(10; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
tuple!(11; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
tuple!(12; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_round_trip() {
        let v = (1u8, -2i64, "x".to_string(), (true, 'c'), [0u16; 2]);
        let b = v.to_bytes();
        assert_eq!(
            <(u8, i64, String, (bool, char), [u16; 2])>::from_bytes(&b).unwrap(),
            v
        );
        let mut code = Vec::new();
        <(u8, i64, String, (bool, char), [u16; 2])>::write_type_code(&mut code);
        assert_eq!(
            code,
            <(u8, i64, String, (bool, char), [u16; 2])>::type_desc().code()
        );
        let twelve = (
            1u8, 2u8, 3u8, 4u8, 5u8, 6u8, 7u8, 8u8, 9u8, 10u8, 11u8, 12u8,
        );
        assert_eq!(twelve.to_bytes(), (1..=12).collect::<Vec<u8>>());
    }
}
