//! What a model file holds, read from its header without loading weights (`ternlm info` is
//! fast on a 10 GB file), and the same facts about a loaded [`Model`]. Front ends describe
//! models through these rather than through the GGUF reader, which is the format crate's
//! business and may change shape under them.

use std::collections::BTreeMap;
use std::path::Path;

use ternlm_format::{GgufFile, Metadata};

use crate::config::Config;
use crate::error::Result;
use crate::model::{Model, open_model_file};
use crate::tokenizer::Tokenizer;
use crate::weight_type::WeightType;

/// A model file's header: a GGUF file, or the GGUF image a Hugging Face checkpoint folder
/// converts to. Reading the tokenizer and hyperparameters is left to [`tokenizer`] and
/// [`config`] so a caller can tell a file that cannot be opened from one whose metadata is
/// wrong, and report each as it arises.
///
/// [`tokenizer`]: Self::tokenizer
/// [`config`]: Self::config
#[derive(Debug)]
pub struct ModelFileInfo {
    file: GgufFile,
}

/// How many tensors of one type a file holds, and their bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorTypeCount {
    pub ty: WeightType,
    pub tensors: usize,
    pub bytes: u64,
}

impl ModelFileInfo {
    /// Reads `path`'s header; a checkpoint folder is converted in memory on `threads`
    /// threads first, since that is the file it loads as.
    pub fn open(path: &Path, threads: usize) -> Result<Self> {
        Ok(Self { file: open_model_file(path, threads)? })
    }

    /// `general.name` as the file gives it, untrimmed; `None` when it has none
    /// ([`Model::name`] falls back to the file name instead).
    pub fn name(&self) -> Result<Option<&str>> {
        Ok(self.file.str_of("general.name")?)
    }

    pub fn gguf_version(&self) -> u32 {
        self.file.version
    }

    /// Bytes of the file (of the in-memory image, for a checkpoint folder).
    pub fn file_bytes(&self) -> u64 {
        self.file.len()
    }

    /// Elements of all tensors, embedding and norms included.
    pub fn param_count(&self) -> u64 {
        param_count(&self.file)
    }

    pub fn tensor_count(&self) -> usize {
        self.file.tensors.len()
    }

    /// Tensors per type, ordered by the type's name.
    pub fn tensor_types(&self) -> Vec<TensorTypeCount> {
        let mut types: BTreeMap<&str, TensorTypeCount> = BTreeMap::new();
        for t in &self.file.tensors {
            let e = types.entry(t.ty.name()).or_insert(TensorTypeCount { ty: t.ty.into(), tensors: 0, bytes: 0 });
            e.tensors += 1;
            e.bytes += t.size;
        }
        types.into_values().collect()
    }

    /// `tokenizer.chat_template`, the model's own template source.
    pub fn chat_template(&self) -> Result<Option<&str>> {
        Ok(self.file.str_of("tokenizer.chat_template")?)
    }

    pub fn has_ternary_tensors(&self) -> bool {
        has_ternary_tensors(&self.file)
    }

    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::from_metadata(&self.file)
    }

    /// The hyperparameters; `n_vocab_hint` (the tokenizer's size) stands in when the file
    /// does not state the vocabulary.
    pub fn config(&self, n_vocab_hint: Option<usize>) -> Result<Config> {
        Config::from_metadata(&self.file, n_vocab_hint)
    }
}

impl Model {
    /// Elements of all the file's tensors, as [`ModelFileInfo::param_count`].
    pub fn param_count(&self) -> u64 {
        param_count(self.file())
    }

    /// Bytes of the model file (of the in-memory image, for a checkpoint folder).
    pub fn file_bytes(&self) -> u64 {
        self.file().len()
    }

    /// Whether the file stores any tensor in a ternary type: without one, a ternary layout
    /// option has nothing to act on.
    pub fn has_ternary_tensors(&self) -> bool {
        has_ternary_tensors(self.file())
    }
}

fn param_count(file: &GgufFile) -> u64 {
    file.tensors.iter().map(|t| t.n_elements()).sum()
}

fn has_ternary_tensors(file: &GgufFile) -> bool {
    file.tensors.iter().any(|t| t.ty.is_ternary())
}
