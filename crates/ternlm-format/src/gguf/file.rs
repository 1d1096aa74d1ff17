//! A GGUF file: the mmap of a file on disk (or a GGUF image built in memory, as when a
//! Hugging Face checkpoint is converted at load) plus its parsed header, handing out each
//! tensor's bytes as a borrowed slice (no copies).

use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::metadata::{Metadata, MetadataValue};
use super::reader::{GgufView, TensorInfo};
use crate::error::{FormatError, Result};

/// The bytes behind a [`GgufFile`].
enum Backing {
    Map(Mmap),
    Owned(Vec<u8>),
}

impl Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Map(m) => m,
            Self::Owned(v) => v,
        }
    }
}

pub struct GgufFile {
    path: PathBuf,
    mmap: Backing,
    view: GgufView,
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| FormatError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(io(std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory, not a GGUF file")));
        }
        // SAFETY: the file is opened read-only and the map is never written through. Another
        // process truncating the file underneath us is the one hazard mmap cannot rule out;
        // every engine that maps model files accepts it.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let view = GgufView::parse(&mmap)?;
        Ok(Self { path, mmap: Backing::Map(mmap), view })
    }

    /// A GGUF image held in memory; `path` is what errors and `ternlm info` call it.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Self> {
        let view = GgufView::parse(&bytes)?;
        Ok(Self { path: path.as_ref().to_path_buf(), mmap: Backing::Owned(bytes), view })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn view(&self) -> &GgufView {
        &self.view
    }

    pub fn len(&self) -> u64 {
        self.mmap.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.mmap.is_empty()
    }

    /// The raw bytes of a tensor. Offsets were checked against the file length at parse time.
    pub fn data(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.offset as usize..(info.offset + info.size) as usize]
    }

    /// Drops this process's resident pages of a tensor that has been copied elsewhere (a
    /// ternary tensor repacked at load), so resident memory is the file's bytes in use plus
    /// the copies, not both. The bytes stay readable: touching them again reads the file.
    pub fn release(&self, info: &TensorInfo) {
        let page = 4096;
        let start = (info.offset as usize).div_ceil(page) * page;
        let end = ((info.offset + info.size) as usize) / page * page;
        if let Backing::Map(map) = &self.mmap
            && end > start
        {
            // SAFETY: the map is a read-only view of a file we never write; discarding its
            // pages only makes later reads fetch the same bytes from the file again, so no
            // borrowed slice can observe a change.
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
        }
    }

    /// The tensor named `name` and its bytes, or an error that names it.
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self.view.require_tensor(name)?;
        Ok((info, self.data(info)))
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufFile({}, {} bytes, {} tensors)", self.path.display(), self.mmap.len(), self.view.tensors.len())
    }
}

impl Metadata for GgufFile {
    fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.view.get(key)
    }
}

impl Deref for GgufFile {
    type Target = GgufView;
    fn deref(&self) -> &GgufView {
        &self.view
    }
}

/// The whole mapped file, so kernels can borrow tensor bytes in place.
impl AsRef<[u8]> for GgufFile {
    fn as_ref(&self) -> &[u8] {
        &self.mmap
    }
}
