//! The tensor types a caller may ask for when writing a model (`ternlm dummy`, `ternlm
//! convert`), as the model crate's own type: callers name types through this crate and never
//! depend on the file-format crate's table, which can grow or change its ids underneath.

use std::fmt;
use std::str::FromStr;

use ternlm_format::TensorType;

use crate::error::ModelError;

/// A tensor element type: ggml's F16, Q8_0, TQ2_0, bitnet.cpp's I2_S and the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WeightType(TensorType);

impl WeightType {
    pub const F32: Self = Self(TensorType::F32);
    pub const F16: Self = Self(TensorType::F16);
    pub const BF16: Self = Self(TensorType::BF16);
    pub const Q4_0: Self = Self(TensorType::Q4_0);
    pub const Q4_1: Self = Self(TensorType::Q4_1);
    pub const Q8_0: Self = Self(TensorType::Q8_0);
    pub const Q4K: Self = Self(TensorType::Q4K);
    pub const Q6K: Self = Self(TensorType::Q6K);
    pub const TQ1_0: Self = Self(TensorType::TQ1_0);
    pub const TQ2_0: Self = Self(TensorType::TQ2_0);
    pub const I2S: Self = Self(TensorType::I2S);

    /// ggml's spelling (`TQ2_0`, `I2_S`, `Q6_K`), as GGUF tools print it.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    pub fn is_ternary(self) -> bool {
        self.0.is_ternary()
    }

    /// The type named `s` in any case, with `-` for `_` (`tq2-0`, `q6_k`, `I2_S`), as users
    /// type them on a command line.
    pub fn by_name(s: &str) -> Option<Self> {
        let norm = s.to_ascii_lowercase().replace('-', "_");
        TensorType::ALL.into_iter().find(|t| t.name().to_ascii_lowercase() == norm).map(Self)
    }
}

impl From<TensorType> for WeightType {
    fn from(t: TensorType) -> Self {
        Self(t)
    }
}

impl From<WeightType> for TensorType {
    fn from(t: WeightType) -> Self {
        t.0
    }
}

impl FromStr for WeightType {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        Self::by_name(s).ok_or_else(|| ModelError::Invalid(format!("unknown tensor type {s:?} (one of {})", TensorType::ALL.map(|t| t.name().to_ascii_lowercase()).join(", "))))
    }
}

impl fmt::Display for WeightType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_any_case_and_with_dashes() {
        assert_eq!("tq2-0".parse::<WeightType>().ok(), Some(WeightType::TQ2_0));
        assert_eq!("I2_S".parse::<WeightType>().ok(), Some(WeightType::I2S));
        assert_eq!("q6_k".parse::<WeightType>().ok(), Some(WeightType::Q6K));
        assert!("q5_0".parse::<WeightType>().is_err());
        for t in TensorType::ALL {
            assert_eq!(WeightType::by_name(t.name()).map(TensorType::from), Some(t));
            assert_eq!(WeightType::from(t).to_string(), t.to_string());
        }
    }
}
