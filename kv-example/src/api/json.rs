//! proto3-JSON field codecs, as etcd's gateway reads and writes them: bytes
//! are base64, 64-bit integers are JSON strings (numbers are accepted too),
//! enums are names (numbers accepted), `null` is the zero value.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// Standard alphabet, padding optional: Go's jsonpb accepts both forms.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// URL-safe alphabet, padding optional.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes base64 in either alphabet, padded or not.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD_LENIENT
        .decode(text)
        .or_else(|_| URL_SAFE_LENIENT.decode(text))
}

/// Encodes bytes as standard padded base64 (what etcd writes).
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Serializes bytes as base64.
pub fn ser_bytes<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&encode_base64(bytes))
}

/// Serializes an i64 as a JSON string, as proto3 JSON writes int64.
pub fn ser_i64<S: Serializer>(value: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Serializes a u64 as a JSON string.
pub fn ser_u64<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Whether a value is its type's zero (proto3 JSON leaves those out).
pub fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Deserializes base64 bytes; `null` is empty.
pub fn de_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    struct BytesVisitor;
    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a base64 string")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            decode_base64(text).map_err(|error| E::custom(format!("illegal base64 data: {error}")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<u8>, E> {
            Ok(Vec::new())
        }
    }
    deserializer.deserialize_any(BytesVisitor)
}

/// Deserializes an i64 from a JSON string or number; `null` is zero.
pub fn de_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct IntVisitor;
    impl<'de> Visitor<'de> for IntVisitor {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an int64 as a string or a number")
        }
        fn visit_i64<E: de::Error>(self, value: i64) -> Result<i64, E> {
            Ok(value)
        }
        fn visit_u64<E: de::Error>(self, value: u64) -> Result<i64, E> {
            i64::try_from(value).map_err(|_| E::custom(format!("{value} overflows int64")))
        }
        fn visit_f64<E: de::Error>(self, value: f64) -> Result<i64, E> {
            if value.fract() == 0.0 && value.abs() < 9.0e15 {
                Ok(value as i64)
            } else {
                Err(E::custom(format!("{value} is not an int64")))
            }
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<i64, E> {
            text.trim()
                .parse()
                .map_err(|_| E::custom(format!("{text:?} is not an int64")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<i64, E> {
            Ok(0)
        }
    }
    deserializer.deserialize_any(IntVisitor)
}

/// Deserializes a u64 from a JSON string or number; `null` is zero.
pub fn de_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let value = de_i64(deserializer)?;
    u64::try_from(value).map_err(|_| de::Error::custom(format!("{value} is not a uint64")))
}

/// Deserializes a bool; `null` is false.
pub fn de_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let value: Option<bool> = serde::Deserialize::deserialize(deserializer)?;
    Ok(value.unwrap_or(false))
}

/// A proto enum: its names, in number order.
pub trait ProtoEnum: Sized + Copy {
    /// The names, index = number.
    const NAMES: &'static [&'static str];
    /// The variant of number `n`.
    fn from_number(n: usize) -> Option<Self>;
    /// This variant's number.
    fn number(self) -> usize;
}

/// Deserializes a proto enum from its name or number; `null` is the first.
pub fn de_enum<'de, D: Deserializer<'de>, T: ProtoEnum>(deserializer: D) -> Result<T, D::Error> {
    struct EnumVisitor<T>(std::marker::PhantomData<T>);
    impl<'de, T: ProtoEnum> Visitor<'de> for EnumVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "one of {:?} or its number", T::NAMES)
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
            T::from_number(n as usize).ok_or_else(|| E::custom(format!("unknown enum value {n}")))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
            usize::try_from(n)
                .ok()
                .and_then(T::from_number)
                .ok_or_else(|| E::custom(format!("unknown enum value {n}")))
        }
        fn visit_str<E: de::Error>(self, name: &str) -> Result<T, E> {
            T::NAMES
                .iter()
                .position(|known| *known == name)
                .and_then(T::from_number)
                .ok_or_else(|| E::custom(format!("unknown enum value {name:?}")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<T, E> {
            T::from_number(0).ok_or_else(|| E::custom("enum has no zero value"))
        }
    }
    deserializer.deserialize_any(EnumVisitor(std::marker::PhantomData))
}

/// Serializes a proto enum by name.
pub fn ser_enum<S: Serializer, T: ProtoEnum>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(T::NAMES[value.number()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "de_i64")]
        n: i64,
        #[serde(default, deserialize_with = "de_bytes")]
        b: Vec<u8>,
    }

    fn probe(json: &str) -> Result<Probe, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn int64_reads_strings_numbers_and_null() {
        assert_eq!(probe(r#"{"n":"42"}"#).unwrap().n, 42);
        assert_eq!(probe(r#"{"n":-7}"#).unwrap().n, -7);
        assert_eq!(probe(r#"{"n":null}"#).unwrap().n, 0);
        assert_eq!(probe(r#"{}"#).unwrap().n, 0);
        assert!(probe(r#"{"n":"x"}"#).is_err());
        assert!(probe(r#"{"n":1.5}"#).is_err());
        assert!(probe(r#"{"n":18446744073709551615}"#).is_err());
    }

    #[test]
    fn bytes_read_both_alphabets_padded_or_not() {
        assert_eq!(probe(r#"{"b":"Zm9v"}"#).unwrap().b, b"foo");
        assert_eq!(probe(r#"{"b":"Zm8="}"#).unwrap().b, b"fo");
        assert_eq!(probe(r#"{"b":"Zm8"}"#).unwrap().b, b"fo");
        assert_eq!(probe(r#"{"b":"_-8="}"#).unwrap().b, [0xff, 0xef]);
        assert!(probe(r#"{"b":"!!"}"#).is_err());
        assert!(probe(r#"{"b":5}"#).is_err());
    }
}
