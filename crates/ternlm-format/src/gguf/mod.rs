//! GGUF v3 (and v2) reading. [`GgufView::parse`] reads a header from any byte slice with every
//! length, count and offset bounds-checked; [`GgufFile`] owns an mmap of a file and hands out
//! tensor bytes without copying.

mod file;
mod metadata;
mod reader;
pub mod writer;

pub use file::GgufFile;
pub use metadata::{Metadata, MetadataValue};
pub use reader::{GgufView, MAX_DIMS, TensorInfo};
