//! Typed errors of the format layer. Every variant says what was wrong and where, so a bad
//! file yields one readable line, never a panic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a GGUF file: it begins with {} where a GGUF file begins with \"GGUF\"{}", magic_text(.found), magic_hint(.found))]
    BadMagic { found: [u8; 4] },
    #[error("unsupported GGUF version {0} (ternlm reads versions 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("GGUF file is truncated: needed {needed} bytes at offset {offset} while reading {what}, file has {len}")]
    Truncated { what: String, offset: u64, needed: u64, len: u64 },
    #[error("GGUF {what} is implausible: {value} (limit {limit})")]
    Implausible { what: String, value: u64, limit: u64 },
    #[error("GGUF {what} is {value}, more than the {remaining} bytes left could hold: the file is truncated or corrupt")]
    CountBeyondFile { what: String, value: u64, remaining: u64 },
    #[error("GGUF string in {what} is not valid UTF-8")]
    BadUtf8 { what: String },
    #[error("GGUF metadata key {key:?} has unknown value type {type_id}")]
    BadValueType { key: String, type_id: u32 },
    #[error("duplicate {what} {name:?}")]
    Duplicate { what: &'static str, name: String },
    #[error("tensor {name:?} has unknown tensor type id {type_id}")]
    UnknownTensorType { name: String, type_id: u32 },
    #[error("tensor {name:?}: {reason}")]
    BadTensor { name: String, reason: String },
    #[error("tensor {0:?} not found in the model file")]
    MissingTensor(String),
    #[error("metadata key {0:?} is missing")]
    MissingKey(String),
    #[error("metadata key {key:?} has the wrong type: expected {expected}, found {found}")]
    WrongKeyType { key: String, expected: &'static str, found: &'static str },
    #[error("{path}: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("tensor {name:?} in {file}: {reason}")]
    StTensor { file: PathBuf, name: String, reason: String },
    #[error("bad GGUF alignment {0} (must be a power of two between 1 and 65536)")]
    BadAlignment(u64),
}

pub type Result<T> = std::result::Result<T, FormatError>;

/// The first bytes of a file, as text when they are printable ASCII and as hex otherwise.
fn magic_text(found: &[u8; 4]) -> String {
    if found.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(found))
    } else {
        format!("bytes {}", found.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "))
    }
}

/// What a file that begins with `found` probably is, when that is recognizable.
fn magic_hint(found: &[u8; 4]) -> &'static str {
    match found {
        [b'P', b'K', 3, 4] => " (it is a zip archive: a Python wheel holds its .gguf inside)",
        [b'{', ..] | [b'[', ..] => " (it looks like JSON)",
        [b'<', ..] => " (it looks like HTML or XML: a download that returned a web page?)",
        [b'v', b'e', b'r', b's'] => " (it looks like a Git LFS pointer, not the file it points to)",
        // A safetensors file starts with the little-endian length of its JSON header.
        [_, _, 0, 0] => " (a safetensors file? give the checkpoint's folder, with config.json, or convert it with `ternlm convert`)",
        _ => "",
    }
}
