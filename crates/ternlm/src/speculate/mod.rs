//! Speculative decoding: propose a few tokens cheaply, then let the model check all of them
//! in one forward step (a step of several positions reads the weights once, as a step of
//! one does). Verification (in [`crate::Model::step`]) keeps the output exactly what plain
//! decoding gives: the same tokens, greedy or sampled with the same seed, hence the same
//! distribution.
//!
//! Two proposers: prompt lookup ([`lookup`]: the tokens that followed the latest earlier
//! occurrence of the sequence's last n-gram) and a draft model (a smaller model with the
//! same vocabulary, decoding greedily). [`DraftControl`] decides per sequence how many to
//! propose from how many were accepted, so that drafting which does not pay stops.

mod control;
mod cost;
pub(crate) mod lookup;

pub(crate) use control::DraftControl;
pub(crate) use cost::StepCost;

/// Where drafted tokens come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpeculateMode {
    /// Plain decoding: one token per step.
    #[default]
    Off,
    /// Prompt lookup: continue an earlier occurrence of the last few tokens.
    Lookup,
    /// A draft model attached with [`crate::Model::with_draft_model`].
    Draft,
}

impl SpeculateMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Lookup => "lookup",
            Self::Draft => "draft",
        }
    }
}

impl std::str::FromStr for SpeculateMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" | "none" => Ok(Self::Off),
            "lookup" | "prompt-lookup" => Ok(Self::Lookup),
            "draft" => Ok(Self::Draft),
            _ => Err(format!("unknown speculation mode {s:?} (off, lookup or draft)")),
        }
    }
}

/// Drafted tokens verified per step at most when nobody says: see the README's
/// speculative-decoding section for the measurements behind it.
pub const DEFAULT_DRAFT_MAX: usize = 8;

/// A sequence's speculative-decoding settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Speculation {
    pub mode: SpeculateMode,
    /// Tokens proposed per step at most.
    pub draft_max: usize,
    /// Tokens proposed per step at least (when the proposer has that many), even when the
    /// acceptance seen so far says drafting does not pay (llama.cpp's `--draft-min`); 0
    /// lets the control pause drafting.
    pub draft_min: usize,
}

impl Default for Speculation {
    fn default() -> Self {
        Self { mode: SpeculateMode::Off, draft_max: DEFAULT_DRAFT_MAX, draft_min: 0 }
    }
}

impl Speculation {
    pub fn is_on(&self) -> bool {
        self.mode != SpeculateMode::Off && self.draft_max > 0
    }
}
