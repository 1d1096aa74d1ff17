//! What can go wrong in `fit`: a hardware table that does not parse or holds a bad entry, an
//! unknown hardware name, or a model file that cannot be read.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FitError {
    /// The table is not TOML of the expected shape.
    #[error("the hardware table does not parse: {0}")]
    Table(String),
    /// An entry parses but a value is unusable (not positive, no source, two prices...).
    #[error("hardware table entry {name:?}: {reason}")]
    BadEntry { name: String, reason: String },
    #[error("unknown hardware {name:?}; one of: {valid}")]
    UnknownHardware { name: String, valid: String },
    /// The model's hyperparameters do not describe a model `fit` can cost.
    #[error("{0}")]
    BadModel(String),
    #[error(transparent)]
    Model(#[from] ternlm::ModelError),
}
