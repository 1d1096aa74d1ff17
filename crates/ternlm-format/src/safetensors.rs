//! Hugging Face safetensors checkpoints: a single `model.safetensors`, or the shards that
//! `model.safetensors.index.json` lists. Every file is mmapped and its header validated at
//! open (the `safetensors` crate checks offsets against the file), so a tensor handed out
//! later is always in bounds; errors name the file and the tensor.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
pub use safetensors::Dtype;

use crate::error::{FormatError, Result};

/// The index file that lists which shard holds each tensor.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The single-file checkpoint name.
pub const SINGLE_FILE: &str = "model.safetensors";

struct Shard {
    path: PathBuf,
    mmap: Mmap,
}

struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    range: Range<usize>,
}

/// One tensor of a checkpoint: where it came from, its dtype and shape, and its bytes.
#[derive(Clone, Copy, Debug)]
pub struct StTensor<'a> {
    pub name: &'a str,
    pub file: &'a Path,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

/// All tensors of a checkpoint, across its shards.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Entry>,
}

fn st_err(path: &Path, reason: impl Into<String>) -> FormatError {
    FormatError::Safetensors { path: path.to_path_buf(), reason: reason.into() }
}

impl Checkpoint {
    /// Opens the checkpoint in `dir`: the shards named by the index when there is one, else
    /// `model.safetensors`, else every `*.safetensors` file in the directory.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| FormatError::Io { path: p, source }
        };
        let index = dir.join(INDEX_FILE);
        let files: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(io(&index))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| st_err(&index, format!("is not valid JSON: {e}")))?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| st_err(&index, "has no \"weight_map\" object"))?;
            let mut names: Vec<String> = Vec::new();
            for (tensor, file) in map {
                let f = file.as_str().ok_or_else(|| st_err(&index, format!("weight_map[{tensor:?}] is not a file name")))?;
                if f.contains('/') || f.contains('\\') || f == ".." {
                    return Err(st_err(&index, format!("shard name {f:?} is not a plain file name")));
                }
                if !names.iter().any(|n| n == f) {
                    names.push(f.to_string());
                }
            }
            names.sort();
            let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
            if let Some(missing) = paths.iter().find(|p| !p.exists()) {
                return Err(st_err(missing, format!("is listed in {INDEX_FILE} but missing (an incomplete download?)")));
            }
            paths
        } else if dir.join(SINGLE_FILE).exists() {
            vec![dir.join(SINGLE_FILE)]
        } else {
            let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map_err(io(dir))?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "safetensors")).collect();
            v.sort();
            if v.is_empty() {
                return Err(st_err(dir, "holds no *.safetensors file"));
            }
            v
        };
        let mut ckpt = Self { dir: dir.to_path_buf(), shards: Vec::new(), tensors: BTreeMap::new() };
        for path in files {
            ckpt.add_shard(path)?;
        }
        Ok(ckpt)
    }

    fn add_shard(&mut self, path: PathBuf) -> Result<()> {
        let file = File::open(&path).map_err(|source| FormatError::Io { path: path.clone(), source })?;
        // SAFETY: the file is opened read-only and the map is never written through; as with
        // GGUF files, another process truncating it underneath us is the accepted hazard.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| FormatError::Io { path: path.clone(), source })?;
        let st = safetensors::SafeTensors::deserialize(&mmap).map_err(|e| st_err(&path, format!("is not a valid safetensors file: {e}")))?;
        let (header_len, _) = safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| st_err(&path, e.to_string()))?;
        let data_start = 8 + header_len;
        let shard = self.shards.len();
        for (name, view) in st.iter() {
            if self.tensors.contains_key(name) {
                return Err(st_err(&path, format!("tensor {name:?} also appears in another shard")));
            }
            // The view's bytes are a subslice of the map; keep them as a range so the entry
            // owns nothing borrowed.
            let start = view.data().as_ptr() as usize - mmap.as_ptr() as usize;
            debug_assert!(start >= data_start);
            let range = start..start + view.data().len();
            self.tensors.insert(name.to_string(), Entry { shard, dtype: view.dtype(), shape: view.shape().to_vec(), range });
        }
        self.shards.push(Shard { path, mmap });
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn tensor(&self, name: &str) -> Option<StTensor<'_>> {
        let (name, e) = self.tensors.get_key_value(name)?;
        let shard = &self.shards[e.shard];
        Some(StTensor { name, file: &shard.path, dtype: e.dtype, shape: &e.shape, data: &shard.mmap[e.range.clone()] })
    }

    /// The tensor `name`, or an error naming it and the checkpoint.
    pub fn require(&self, name: &str) -> Result<StTensor<'_>> {
        self.tensor(name).ok_or_else(|| st_err(&self.dir, format!("has no tensor {name:?}")))
    }
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checkpoint({}, {} shards, {} tensors)", self.dir.display(), self.shards.len(), self.tensors.len())
    }
}

impl StTensor<'_> {
    pub fn error(&self, reason: impl Into<String>) -> FormatError {
        FormatError::StTensor { file: self.file.to_path_buf(), name: self.name.to_string(), reason: reason.into() }
    }

    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Fails unless the tensor has exactly `shape`.
    pub fn expect_shape(&self, shape: &[usize]) -> Result<()> {
        if self.shape != shape {
            return Err(self.error(format!("has shape {:?}, expected {shape:?}", self.shape)));
        }
        Ok(())
    }

    /// The values as f32 (F32, F16 or BF16 tensors).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let d = self.data;
        Ok(match self.dtype {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => d.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => d.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => return Err(self.error(format!("has dtype {other:?}, expected a float type (F32, F16 or BF16)"))),
        })
    }

    /// The single value of a one-element float tensor (a BitNet `weight_scale`).
    pub fn scalar(&self) -> Result<f32> {
        if self.n_elements() != 1 {
            return Err(self.error(format!("has shape {:?}, expected a single value", self.shape)));
        }
        let v = self.to_f32()?[0];
        if !v.is_finite() {
            return Err(self.error(format!("is {v}, not a finite number")));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors.iter().map(|(n, d, s, b)| (n.to_string(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap())).collect();
        std::fs::write(dir.join(file), safetensors::serialize(views, None).unwrap()).unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ternlm-st-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_shards_through_the_index() {
        let d = tmp("shards");
        let a: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = [bf16::from_f32(0.25)].iter().flat_map(|v| v.to_le_bytes()).collect();
        write(&d, "m-1.safetensors", &[("a", Dtype::F32, vec![2], a)]);
        write(&d, "m-2.safetensors", &[("b", Dtype::BF16, vec![1, 1], b)]);
        std::fs::write(d.join(INDEX_FILE), r#"{"weight_map":{"a":"m-1.safetensors","b":"m-2.safetensors"}}"#).unwrap();
        let c = Checkpoint::open_dir(&d).unwrap();
        assert_eq!(c.require("a").unwrap().to_f32().unwrap(), vec![1.5, -2.0]);
        assert_eq!(c.require("b").unwrap().scalar().unwrap(), 0.25);
        assert!(c.require("b").unwrap().expect_shape(&[1]).is_err());
        let e = c.require("zzz").unwrap_err().to_string();
        assert!(e.contains("zzz"), "{e}");
    }

    #[test]
    fn a_missing_shard_and_a_truncated_header_are_named() {
        let d = tmp("bad");
        std::fs::write(d.join(INDEX_FILE), r#"{"weight_map":{"a":"gone.safetensors"}}"#).unwrap();
        let e = Checkpoint::open_dir(&d).unwrap_err().to_string();
        assert!(e.contains("gone.safetensors") && e.contains("missing"), "{e}");
        std::fs::remove_file(d.join(INDEX_FILE)).unwrap();
        write(&d, SINGLE_FILE, &[("a", Dtype::F32, vec![4], vec![0; 16])]);
        let full = std::fs::read(d.join(SINGLE_FILE)).unwrap();
        std::fs::write(d.join(SINGLE_FILE), &full[..20]).unwrap();
        let e = Checkpoint::open_dir(&d).unwrap_err().to_string();
        assert!(e.contains(SINGLE_FILE) && e.contains("not a valid safetensors"), "{e}");
    }
}
