//! `ternlm fit`: how fast and how cheaply a model would run on hardware ternlm has not been
//! measured on, predicted from the model's bytes and multiply-accumulates per token and a
//! table of hardware (memory bandwidth, int8 throughput, memory, power, price).
//!
//! - [`hardware`]: the table (`data/hardware.toml`, every number with its source) and its
//!   parsing;
//! - [`this_machine`]: the same description of the machine ternlm runs on, probed;
//! - [`cost`]: what one token of a model costs in bytes and MACs, read from the file's
//!   header without loading weights;
//! - [`calibration`]: the efficiency factors, measured on a known machine;
//! - [`pricing`]: what an hour of a machine costs (rented, or owned and spread over its life);
//! - [`predict`]: the prediction for one model on one machine, and the ranking over many.
//!
//! These are predictions: only [`this_machine`] is measured, the rest applies the factors
//! measured there to vendors' peak numbers.

pub mod calibration;
pub mod cost;
mod error;
pub mod hardware;
pub mod predict;
pub mod pricing;
pub mod this_machine;

pub use cost::ModelCost;
pub use error::FitError;
pub use hardware::{Basis, Hardware, Kind, Price, Sourced, table};
pub use predict::{Prediction, predict, rank};
pub use pricing::Pricing;
pub use this_machine::this_machine;
