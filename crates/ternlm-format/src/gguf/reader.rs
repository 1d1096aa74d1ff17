//! The bounds-checked GGUF header parser. It reads from a byte slice, so the same code serves
//! mmapped files and the fuzz target. Every count is checked against the bytes that remain
//! before anything is allocated, and every tensor's offset and size against the file length.

use std::collections::HashMap;

use super::metadata::{Metadata, MetadataValue};
use crate::error::{FormatError, Result};
use crate::types::TensorType;

const MAGIC: &[u8; 4] = b"GGUF";
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: usize = 4;
const MAX_ARRAY_DEPTH: usize = 4;
const DEFAULT_ALIGNMENT: u64 = 32;
/// No real vocabulary, tensor name or template comes near this.
const MAX_STRING_LEN: u64 = 64 << 20;
/// Metadata array elements in a whole file. Each parsed element costs more memory than its
/// encoding, so this bounds what a crafted file can make us allocate; real vocabularies
/// (tokens, scores, types, merges) stay far below it.
const MAX_ARRAY_ELEMENTS: u64 = 1 << 24;

/// One tensor as the header describes it; `offset` is absolute within the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (fastest varying).
    pub dims: Vec<u64>,
    pub ty: TensorType,
    pub offset: u64,
    pub size: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }

    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }

    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(u64::to_string).collect();
        format!("[{}]", dims.join(", "))
    }
}

/// A parsed GGUF header: version, metadata, tensor table.
#[derive(Clone, Debug)]
pub struct GgufView {
    pub version: u32,
    pub metadata: Vec<(String, MetadataValue)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
    pub file_len: u64,
    key_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

impl Metadata for GgufView {
    fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }
}

impl GgufView {
    /// Parses the header of a whole GGUF file held in `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Cursor { bytes, pos: 0, array_budget: MAX_ARRAY_ELEMENTS };
        let magic = r.take(4, "magic")?;
        if magic != MAGIC {
            let mut found = [0u8; 4];
            found.copy_from_slice(magic);
            return Err(FormatError::BadMagic { found });
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        // A key/value needs at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at
        // least 8 + 4 + 8 + 4 + 8.
        r.check_count(n_kv, 13, "metadata count")?;
        r.check_count(n_tensors, 32, "tensor count")?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut key_index = HashMap::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let type_id = r.u32(&format!("type of key {key:?}"))?;
            let value = r.value(type_id, &key, 0)?;
            if key_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(FormatError::Duplicate { what: "metadata key", name: key });
            }
            metadata.push((key, value));
        }

        let alignment = match key_index.get("general.alignment") {
            Some(&i) => {
                let v = &metadata[i].1;
                let a = v.as_u64().ok_or(FormatError::WrongKeyType { key: "general.alignment".into(), expected: "non-negative integer", found: v.type_name() })?;
                if a == 0 || !a.is_power_of_two() || a > 65536 {
                    return Err(FormatError::BadAlignment(a));
                }
                a
            }
            None => DEFAULT_ALIGNMENT,
        };

        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&format!("dimension count of tensor {name:?}"))? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(FormatError::BadTensor { name, reason: format!("has {n_dims} dimensions (1 to {MAX_DIMS} allowed)") });
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(r.u64(&format!("dimensions of tensor {name:?}"))?);
            }
            let type_id = r.u32(&format!("type of tensor {name:?}"))?;
            let offset = r.u64(&format!("offset of tensor {name:?}"))?;
            raw.push((name, dims, type_id, offset));
        }

        let data_offset = align_up(r.pos as u64, alignment).ok_or(FormatError::Implausible { what: "header size".into(), value: r.pos as u64, limit: u64::MAX - alignment })?;
        let file_len = bytes.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = HashMap::with_capacity(raw.len());
        for (name, dims, type_id, rel_offset) in raw {
            let info = tensor_info(name, dims, type_id, rel_offset, data_offset, alignment, file_len)?;
            if tensor_index.insert(info.name.clone(), tensors.len()).is_some() {
                return Err(FormatError::Duplicate { what: "tensor", name: info.name });
            }
            tensors.push(info);
        }

        Ok(Self { version, metadata, tensors, alignment, data_offset, file_len, key_index, tensor_index })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name).ok_or_else(|| FormatError::MissingTensor(name.to_string()))
    }
}

fn tensor_info(name: String, dims: Vec<u64>, type_id: u32, rel_offset: u64, data_offset: u64, alignment: u64, file_len: u64) -> Result<TensorInfo> {
    let bad = |name: &str, reason: String| FormatError::BadTensor { name: name.to_string(), reason };
    let Some(ty) = TensorType::from_id(type_id) else {
        return Err(match TensorType::name_of_id(type_id) {
            "unknown" => FormatError::UnknownTensorType { name, type_id },
            known => bad(&name, format!("has tensor type {known} (id {type_id}), which ternlm does not support")),
        });
    };
    if dims.contains(&0) {
        return Err(bad(&name, "has a zero dimension".into()));
    }
    let mut n: u64 = 1;
    for &d in &dims {
        n = n.checked_mul(d).filter(|&n| n <= file_len.saturating_mul(8)).ok_or_else(|| bad(&name, format!("has implausible dimensions {dims:?}")))?;
    }
    if usize::try_from(n).is_err() {
        return Err(bad(&name, format!("has implausible dimensions {dims:?}")));
    }
    let size = ty.data_size(dims[0], n).ok_or_else(|| bad(&name, format!("row length {} is not a multiple of the {ty} block size {}", dims[0], ty.block_len())))?;
    if !rel_offset.is_multiple_of(alignment) {
        return Err(bad(&name, format!("data offset {rel_offset} is not aligned to {alignment}")));
    }
    let offset = data_offset.checked_add(rel_offset).ok_or_else(|| bad(&name, format!("data offset {rel_offset} overflows")))?;
    let end = offset.checked_add(size).ok_or_else(|| bad(&name, format!("data offset {rel_offset} overflows")))?;
    if end > file_len {
        return Err(bad(&name, format!("data [{offset}, {end}) lies beyond the end of the file ({file_len} bytes): the file is truncated or corrupt")));
    }
    Ok(TensorInfo { name, dims, ty, offset, size })
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    x.checked_add(a - 1).map(|v| v / a * a)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    array_budget: u64,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(FormatError::Truncated { what: what.to_string(), offset: self.pos as u64, needed: n, len: self.bytes.len() as u64 });
        }
        let n = n as usize;
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Rejects a count whose minimal encoding could not fit in what is left of the file.
    fn check_count(&self, count: u64, min_item_bytes: u64, what: &str) -> Result<()> {
        if count > self.remaining() / min_item_bytes.max(1) {
            return Err(FormatError::CountBeyondFile { what: what.to_string(), value: count, remaining: self.remaining() });
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        if len > MAX_STRING_LEN {
            return Err(FormatError::Implausible { what: format!("{what} length"), value: len, limit: MAX_STRING_LEN });
        }
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| FormatError::BadUtf8 { what: what.to_string() })
    }

    fn value(&mut self, type_id: u32, key: &str, depth: usize) -> Result<MetadataValue> {
        use MetadataValue as V;
        let what = || format!("value of key {key:?}");
        Ok(match type_id {
            0 => V::U8(u8::from_le_bytes(self.array(&what())?)),
            1 => V::I8(i8::from_le_bytes(self.array(&what())?)),
            2 => V::U16(u16::from_le_bytes(self.array(&what())?)),
            3 => V::I16(i16::from_le_bytes(self.array(&what())?)),
            4 => V::U32(u32::from_le_bytes(self.array(&what())?)),
            5 => V::I32(i32::from_le_bytes(self.array(&what())?)),
            6 => V::F32(f32::from_le_bytes(self.array(&what())?)),
            7 => match self.array::<1>(&what())?[0] {
                0 => V::Bool(false),
                1 => V::Bool(true),
                b => {
                    return Err(FormatError::Implausible { what: format!("bool value of key {key:?}"), value: b.into(), limit: 1 });
                }
            },
            8 => V::String(self.string(&what())?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(FormatError::Implausible { what: format!("array nesting of key {key:?}"), value: depth as u64 + 1, limit: MAX_ARRAY_DEPTH as u64 });
                }
                let elem_type = self.u32(&what())?;
                let count = self.u64(&what())?;
                let min_size = match elem_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10 | 11 | 12 => 8,
                    9 => 12,
                    _ => return Err(FormatError::BadValueType { key: key.to_string(), type_id: elem_type }),
                };
                self.check_count(count, min_size, &format!("array length of key {key:?}"))?;
                self.array_budget = self.array_budget.checked_sub(count).ok_or_else(|| FormatError::Implausible {
                    what: format!("number of metadata array elements (at key {key:?})"),
                    value: count,
                    limit: MAX_ARRAY_ELEMENTS,
                })?;
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_type, key, depth + 1)?);
                }
                V::Array(items)
            }
            10 => V::U64(u64::from_le_bytes(self.array(&what())?)),
            11 => V::I64(i64::from_le_bytes(self.array(&what())?)),
            12 => V::F64(f64::from_le_bytes(self.array(&what())?)),
            _ => return Err(FormatError::BadValueType { key: key.to_string(), type_id }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::writer::{TensorData, to_bytes};

    fn file(md: Vec<(String, MetadataValue)>, dims: Vec<u64>) -> Vec<u8> {
        let data = vec![0u8; 64];
        to_bytes(&md, &[TensorData { name: "t".into(), dims, ty: TensorType::F32, data: &data }]).unwrap()
    }

    #[test]
    fn rejects_malformed_headers_with_errors_not_panics() {
        let good = file(vec![], vec![4, 4]);
        assert!(GgufView::parse(&good).is_ok());
        for cut in 0..good.len() {
            assert!(GgufView::parse(&good[..cut]).is_err(), "a file cut at {cut} must not parse");
        }
        let mut v = good.clone();
        v[4] = 9;
        assert!(matches!(GgufView::parse(&v), Err(FormatError::UnsupportedVersion(9))));
        let mut v = good.clone();
        v[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(GgufView::parse(&v), Err(FormatError::CountBeyondFile { .. })));
        assert!(matches!(GgufView::parse(&file(vec![], vec![0, 4])), Err(FormatError::BadTensor { .. })));
        assert!(matches!(GgufView::parse(&file(vec![], vec![u64::MAX, 2])), Err(FormatError::BadTensor { .. })));
        assert!(matches!(GgufView::parse(&file(vec![], vec![1, 1, 1, 1, 1])), Err(FormatError::BadTensor { .. })));
        let align = vec![("general.alignment".to_string(), MetadataValue::U32(3))];
        assert!(matches!(GgufView::parse(&file(align, vec![4, 4])), Err(FormatError::BadAlignment(3))));
        let dup = vec![("a".to_string(), MetadataValue::U8(1)), ("a".to_string(), MetadataValue::U8(2))];
        assert!(matches!(GgufView::parse(&file(dup, vec![4, 4])), Err(FormatError::Duplicate { .. })));
    }

    #[test]
    fn huge_arrays_are_refused_before_allocation() {
        let many = vec![("x".to_string(), MetadataValue::Array(vec![MetadataValue::U8(0); (MAX_ARRAY_ELEMENTS + 1) as usize]))];
        let bytes = file(many, vec![4, 4]);
        assert!(matches!(GgufView::parse(&bytes), Err(FormatError::Implausible { .. })));
    }
}
