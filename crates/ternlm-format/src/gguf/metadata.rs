//! GGUF metadata values and typed accessors that turn a wrong or missing key into an error
//! that names the key.

use crate::error::{FormatError, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetadataValue>),
}

impl MetadataValue {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F32(_) => "f32",
            Self::F64(_) => "f64",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Array(_) => "array",
        }
    }

    /// Any integer that is non-negative, as u64.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short rendering for `ternlm info`: scalars in full, arrays by length.
    pub fn summary(&self) -> String {
        match self {
            Self::String(s) if s.chars().count() > 80 => {
                let head: String = s.chars().take(77).collect();
                format!("{head:?}... ({} chars)", s.chars().count())
            }
            Self::String(s) => format!("{s:?}"),
            Self::Array(a) => format!("[{} items]", a.len()),
            Self::F32(v) => format!("{v}"),
            Self::F64(v) => format!("{v}"),
            Self::Bool(v) => format!("{v}"),
            other => other.as_i64().map_or_else(String::new, |v| v.to_string()),
        }
    }
}

/// Typed access to a key/value list; implemented by the parsed header.
pub trait Metadata {
    fn get(&self, key: &str) -> Option<&MetadataValue>;

    fn require(&self, key: &str) -> Result<&MetadataValue> {
        self.get(key).ok_or_else(|| FormatError::MissingKey(key.to_string()))
    }

    fn u64_of(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(|v| v.as_u64().ok_or_else(|| FormatError::WrongKeyType { key: key.to_string(), expected: "non-negative integer", found: v.type_name() })).transpose()
    }

    fn f64_of(&self, key: &str) -> Result<Option<f64>> {
        self.get(key).map(|v| v.as_f64().ok_or_else(|| FormatError::WrongKeyType { key: key.to_string(), expected: "number", found: v.type_name() })).transpose()
    }

    fn str_of(&self, key: &str) -> Result<Option<&str>> {
        self.get(key).map(|v| v.as_str().ok_or_else(|| FormatError::WrongKeyType { key: key.to_string(), expected: "string", found: v.type_name() })).transpose()
    }

    fn bool_of(&self, key: &str) -> Result<Option<bool>> {
        self.get(key).map(|v| v.as_bool().ok_or_else(|| FormatError::WrongKeyType { key: key.to_string(), expected: "bool", found: v.type_name() })).transpose()
    }

    fn array_of(&self, key: &str) -> Result<Option<&[MetadataValue]>> {
        self.get(key).map(|v| v.as_array().ok_or_else(|| FormatError::WrongKeyType { key: key.to_string(), expected: "array", found: v.type_name() })).transpose()
    }
}
