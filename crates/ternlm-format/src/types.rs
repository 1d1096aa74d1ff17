//! The ggml tensor type table: ids as stored in GGUF, block sizes, bytes per block, and the
//! data size of a tensor of a given element count (with I2_S's whole-tensor trailer).

use std::fmt;

/// Tensor element types ternlm understands. Ids are ggml's, except `I2S`, which is
/// bitnet.cpp's id 36 (upstream ggml later reused 36..=38 for repack types that never appear
/// in files, so a 36 in a GGUF file is I2_S).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q4K,
    Q6K,
    TQ1_0,
    TQ2_0,
    I2S,
}

/// Bytes of the trailer that follows I2_S packed weights: one f32 scale then padding.
pub const I2S_TRAILER_BYTES: u64 = 32;
/// Weights per I2_S packing block on x86 (byte j holds weights j, j+32, j+64, j+96).
pub const I2S_BLOCK: usize = 128;

impl TensorType {
    pub const ALL: [TensorType; 11] = [Self::F32, Self::F16, Self::BF16, Self::Q4_0, Self::Q4_1, Self::Q8_0, Self::Q4K, Self::Q6K, Self::TQ1_0, Self::TQ2_0, Self::I2S];

    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            14 => Self::Q6K,
            30 => Self::BF16,
            34 => Self::TQ1_0,
            35 => Self::TQ2_0,
            36 => Self::I2S,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q8_0 => 8,
            Self::Q4K => 12,
            Self::Q6K => 14,
            Self::BF16 => 30,
            Self::TQ1_0 => 34,
            Self::TQ2_0 => 35,
            Self::I2S => 36,
        }
    }

    /// ggml's name for an id, known or not, for error messages about types we do not load.
    pub fn name_of_id(id: u32) -> &'static str {
        match id {
            6 => "Q5_0",
            7 => "Q5_1",
            9 => "Q8_1",
            10 => "Q2_K",
            11 => "Q3_K",
            13 => "Q5_K",
            15 => "Q8_K",
            16..=23 | 29 => "IQ*",
            24 => "I8",
            25 => "I16",
            26 => "I32",
            27 => "I64",
            28 => "F64",
            39 => "MXFP4",
            _ => Self::from_id(id).map_or("unknown", |t| t.name()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q8_0 => "Q8_0",
            Self::Q4K => "Q4_K",
            Self::Q6K => "Q6_K",
            Self::TQ1_0 => "TQ1_0",
            Self::TQ2_0 => "TQ2_0",
            Self::I2S => "I2_S",
        }
    }

    /// Elements per block (the granularity a row length must be a multiple of).
    pub fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q8_0 => 32,
            Self::Q4K | Self::Q6K | Self::TQ1_0 | Self::TQ2_0 => 256,
            Self::I2S => I2S_BLOCK,
        }
    }

    /// Bytes per block. For I2_S this is the packed part only (see [`Self::data_size`]).
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q6K => 210,
            Self::TQ1_0 => 54,
            Self::TQ2_0 => 66,
            Self::I2S => I2S_BLOCK / 4,
        }
    }

    pub fn is_ternary(self) -> bool {
        matches!(self, Self::TQ1_0 | Self::TQ2_0 | Self::I2S)
    }

    /// Bytes of one row of `row_len` elements, or `None` when the row is not a whole number
    /// of blocks. I2_S has no per-row size of its own beyond the packed bytes.
    pub fn row_bytes(self, row_len: usize) -> Option<usize> {
        let bl = self.block_len();
        if !row_len.is_multiple_of(bl) {
            return None;
        }
        (row_len / bl).checked_mul(self.block_bytes())
    }

    /// Total bytes of a tensor with `n_elements` elements whose first dimension is `row_len`,
    /// or `None` on overflow or a ragged row.
    pub fn data_size(self, row_len: u64, n_elements: u64) -> Option<u64> {
        let bl = self.block_len() as u64;
        if row_len == 0 || !row_len.is_multiple_of(bl) {
            return None;
        }
        let packed = (n_elements / bl).checked_mul(self.block_bytes() as u64)?;
        if self == Self::I2S { packed.checked_add(I2S_TRAILER_BYTES) } else { Some(packed) }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for t in TensorType::ALL {
            assert_eq!(TensorType::from_id(t.id()), Some(t));
            assert_eq!(TensorType::name_of_id(t.id()), t.name());
        }
        assert_eq!(TensorType::from_id(13), None);
        assert_eq!(TensorType::name_of_id(13), "Q5_K");
    }

    #[test]
    fn sizes_match_ggml() {
        assert_eq!(TensorType::TQ2_0.data_size(256, 512), Some(132));
        assert_eq!(TensorType::TQ1_0.data_size(256, 256), Some(54));
        assert_eq!(TensorType::I2S.data_size(256, 256 * 256), Some(256 * 64 + 32));
        assert_eq!(TensorType::Q4_1.data_size(33, 33), None);
        assert_eq!(TensorType::Q8_0.row_bytes(64), Some(68));
    }
}
