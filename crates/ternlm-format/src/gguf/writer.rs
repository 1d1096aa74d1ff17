//! Writing GGUF v3: metadata and tensors in, a file (or bytes) out, with the data section
//! aligned as the format requires. Used for generated test models and, later, `convert`.

use std::io::Write;
use std::path::Path;

use super::metadata::MetadataValue;
use crate::error::{FormatError, Result};
use crate::types::TensorType;

/// One tensor to write: name, ggml dims (row length first), type and raw bytes.
pub struct TensorData<'a> {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: TensorType,
    pub data: &'a [u8],
}

/// What the header says of a tensor whose bytes are produced later.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: TensorType,
    pub size: u64,
}

/// The alignment of every tensor's data (GGUF's default `general.alignment`).
pub const ALIGN: usize = 32;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn type_id(v: &MetadataValue) -> u32 {
    use MetadataValue as V;
    match v {
        V::U8(_) => 0,
        V::I8(_) => 1,
        V::U16(_) => 2,
        V::I16(_) => 3,
        V::U32(_) => 4,
        V::I32(_) => 5,
        V::F32(_) => 6,
        V::Bool(_) => 7,
        V::String(_) => 8,
        V::Array(_) => 9,
        V::U64(_) => 10,
        V::I64(_) => 11,
        V::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &MetadataValue) {
    use MetadataValue as V;
    match v {
        V::U8(x) => out.push(*x),
        V::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::Bool(x) => out.push(u8::from(*x)),
        V::String(s) => put_str(out, s),
        V::Array(items) => {
            let elem = items.first().map_or(4, type_id);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                put_value(out, it);
            }
        }
    }
}

/// Serializes a whole GGUF v3 file into memory.
pub fn to_bytes(metadata: &[(String, MetadataValue)], tensors: &[TensorData<'_>]) -> Result<Vec<u8>> {
    let mut out = header(metadata, &specs_of(tensors))?;
    for t in tensors {
        out.extend_from_slice(t.data);
        out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
    }
    Ok(out)
}

fn specs_of(tensors: &[TensorData<'_>]) -> Vec<TensorSpec> {
    tensors.iter().map(|t| TensorSpec { name: t.name.clone(), dims: t.dims.clone(), ty: t.ty, size: t.data.len() as u64 }).collect()
}

/// Header, key/values and tensor infos, padded to where the data section starts; each
/// tensor's data then follows in order, padded to [`ALIGN`].
pub fn header(metadata: &[(String, MetadataValue)], tensors: &[TensorSpec]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        if let MetadataValue::Array(items) = v
            && items.iter().any(|i| type_id(i) != type_id(&items[0]))
        {
            return Err(FormatError::BadValueType { key: k.clone(), type_id: 9 });
        }
        put_str(&mut out, k);
        out.extend_from_slice(&type_id(v).to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0usize;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.id().to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += (t.size as usize).div_ceil(ALIGN) * ALIGN;
    }
    out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
    Ok(out)
}

/// Writes a GGUF v3 file, streaming tensor data rather than assembling the file in memory
/// (generated models of real shapes run to gigabytes).
pub fn write(path: &Path, metadata: &[(String, MetadataValue)], tensors: &[TensorData<'_>]) -> Result<()> {
    let io = |source| FormatError::Io { path: path.to_path_buf(), source };
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(io)?);
    f.write_all(&header(metadata, &specs_of(tensors))?).map_err(io)?;
    let zeros = [0u8; ALIGN];
    for t in tensors {
        f.write_all(t.data).map_err(io)?;
        f.write_all(&zeros[..t.data.len().div_ceil(ALIGN) * ALIGN - t.data.len()]).map_err(io)?;
    }
    f.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgufView, Metadata};

    #[test]
    fn round_trip() {
        let data: Vec<u8> = (0..64u8).collect();
        let md = vec![("general.architecture".to_string(), MetadataValue::String("llama".into())), ("x.list".to_string(), MetadataValue::Array(vec![MetadataValue::I32(3), MetadataValue::I32(-1)]))];
        let t = [TensorData { name: "w".into(), dims: vec![4, 4], ty: TensorType::F32, data: &data }];
        let bytes = to_bytes(&md, &t).unwrap();
        let v = GgufView::parse(&bytes).unwrap();
        assert_eq!(v.str_of("general.architecture").unwrap(), Some("llama"));
        assert_eq!(v.array_of("x.list").unwrap().unwrap().len(), 2);
        let info = v.require_tensor("w").unwrap();
        assert_eq!(&bytes[info.offset as usize..(info.offset + info.size) as usize], &data[..]);
    }
}
