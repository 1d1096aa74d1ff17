//! The sampling options of a chat, which `/set` changes mid-conversation. Every change is
//! checked by the same rules as the command-line flags (`commands::sampler_config`), so a
//! value the flags would refuse is refused here too, and the session goes on unchanged.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use ternlm::{GenerateParams, SamplerConfig};

use crate::cli::SamplingArgs;
use crate::commands::{max_tokens, sampler_config};

/// An option `/set` can change, by Ollama's name.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Param {
    Temperature,
    TopK,
    TopP,
    MinP,
    RepeatPenalty,
    Seed,
    NumPredict,
}

impl Param {
    pub const ALL: [Param; 7] = [Self::Temperature, Self::TopK, Self::TopP, Self::MinP, Self::RepeatPenalty, Self::Seed, Self::NumPredict];

    pub fn name(self) -> &'static str {
        match self {
            Self::Temperature => "temperature",
            Self::TopK => "top_k",
            Self::TopP => "top_p",
            Self::MinP => "min_p",
            Self::RepeatPenalty => "repeat_penalty",
            Self::Seed => "seed",
            Self::NumPredict => "num_predict",
        }
    }

    /// The option `name` stands for: Ollama's name, or the flag's (`top-k`, `--top-k`,
    /// `max-tokens`), in any case.
    pub fn from_name(name: &str) -> Option<Self> {
        let norm = name.trim_start_matches("--").to_ascii_lowercase().replace('-', "_");
        match norm.as_str() {
            "max_tokens" => Some(Self::NumPredict),
            n => Self::ALL.into_iter().find(|p| p.name() == n),
        }
    }
}

/// The options as a saved conversation holds them; a missing one keeps its current value.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SavedOptions {
    pub temperature: Option<f32>,
    pub top_k: Option<i64>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub num_predict: Option<i64>,
}

pub struct Options {
    /// The flags as they stand after every `/set`; the seed in them is not used.
    sampling: SamplingArgs,
    /// The next reply's seed: each reply takes the next one, so asking again gives a new
    /// answer while a fixed `--seed` still repeats the whole session.
    seed: u64,
    /// Print timings after each reply.
    pub verbose: bool,
}

impl Options {
    pub fn new(sampling: &SamplingArgs, verbose: bool) -> Result<Self> {
        let seed = sampler_config(sampling)?.seed;
        Ok(Self { sampling: sampling.clone(), seed, verbose })
    }

    /// Sets `param` to `value` when the flags would accept it; otherwise says why not.
    pub fn set(&mut self, param: Param, value: &str) -> Result<(), String> {
        let mut next = self.sampling.clone();
        let mut seed = self.seed;
        let bad = |what: &str| format!("{}: {value:?} is not {what}", param.name());
        match param {
            Param::Temperature => next.temperature = value.parse().map_err(|_| bad("a number"))?,
            Param::TopK => next.top_k = value.parse().map_err(|_| bad("a whole number (0 or less: off)"))?,
            Param::TopP => next.top_p = value.parse().map_err(|_| bad("a number"))?,
            Param::MinP => next.min_p = value.parse().map_err(|_| bad("a number"))?,
            Param::RepeatPenalty => next.repeat_penalty = value.parse().map_err(|_| bad("a number"))?,
            Param::Seed => {
                // -1 draws a random seed, as the --seed flag does.
                let wanted: i64 = value.parse().map_err(|_| bad("a whole number >= 0, or -1 for a random one"))?;
                seed = sampler_config(&SamplingArgs { seed: Some(wanted), ..self.sampling.clone() }).map_err(|e| e.to_string())?.seed;
            }
            Param::NumPredict => next.max_tokens = value.parse().map_err(|_| bad("a whole number (-1: no limit)"))?,
        }
        self.commit(next, seed)
    }

    /// Takes the options a saved conversation holds, all or none.
    pub fn apply(&mut self, saved: &SavedOptions) -> Result<(), String> {
        let mut next = self.sampling.clone();
        let s = saved;
        next.temperature = s.temperature.unwrap_or(next.temperature);
        next.top_k = s.top_k.unwrap_or(next.top_k);
        next.top_p = s.top_p.unwrap_or(next.top_p);
        next.min_p = s.min_p.unwrap_or(next.min_p);
        next.repeat_penalty = s.repeat_penalty.unwrap_or(next.repeat_penalty);
        next.max_tokens = s.num_predict.unwrap_or(next.max_tokens);
        self.commit(next, s.seed.unwrap_or(self.seed))
    }

    fn commit(&mut self, next: SamplingArgs, seed: u64) -> Result<(), String> {
        sampler_config(&next).map_err(|e| e.to_string())?;
        self.sampling = next;
        self.seed = seed;
        Ok(())
    }

    pub fn saved(&self) -> SavedOptions {
        let s = &self.sampling;
        SavedOptions {
            temperature: Some(s.temperature),
            top_k: Some(s.top_k),
            top_p: Some(s.top_p),
            min_p: Some(s.min_p),
            repeat_penalty: Some(s.repeat_penalty),
            seed: Some(self.seed),
            num_predict: Some(s.max_tokens),
        }
    }

    /// Each option by name with its value, in [`Param::ALL`]'s order.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let s = &self.sampling;
        let values = [s.temperature.to_string(), s.top_k.to_string(), s.top_p.to_string(), s.min_p.to_string(), s.repeat_penalty.to_string(), self.seed.to_string(), s.max_tokens.to_string()];
        Param::ALL.iter().map(|p| p.name()).zip(values).collect()
    }

    /// The parameters of the next reply (which takes the next seed).
    pub fn next_reply(&mut self) -> Result<GenerateParams> {
        let sampler = SamplerConfig { seed: self.seed, ..sampler_config(&self.sampling)? };
        self.seed = self.seed.wrapping_add(1);
        Ok(GenerateParams { max_tokens: max_tokens(&self.sampling), sampler, ..Default::default() })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        sampling: SamplingArgs,
    }

    fn options(args: &[&str]) -> Options {
        let flags = Flags::parse_from(std::iter::once("chat").chain(args.iter().copied()));
        Options::new(&flags.sampling, false).unwrap()
    }

    fn value(o: &Options, name: &str) -> String {
        o.describe().into_iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn set_checks_values_like_the_flags() {
        let mut o = options(&["--seed", "7"]);
        o.set(Param::TopK, "5").unwrap();
        o.set(Param::Temperature, "0").unwrap();
        o.set(Param::NumPredict, "-1").unwrap();
        assert_eq!((value(&o, "top_k"), value(&o, "temperature"), value(&o, "num_predict")), ("5".into(), "0".into(), "-1".into()));
        for (p, v, why) in [
            (Param::Temperature, "-1", "--temperature"),
            (Param::TopP, "5", "--top-p"),
            (Param::MinP, "NaN", "--min-p"),
            (Param::RepeatPenalty, "0", "--repeat-penalty"),
            (Param::TopK, "1.5", "whole number"),
            (Param::Seed, "x", "seed"),
            (Param::Seed, "-2", "--seed"),
        ] {
            let e = o.set(p, v).unwrap_err();
            assert!(e.contains(why), "{p:?} {v}: {e}");
        }
        assert_eq!(value(&o, "temperature"), "0", "a refused value changes nothing");
    }

    #[test]
    fn each_reply_takes_the_next_seed() {
        let mut o = options(&["--seed", "7", "-n", "3"]);
        assert_eq!(o.next_reply().unwrap().sampler.seed, 7);
        assert_eq!(o.next_reply().unwrap().max_tokens, 3);
        o.set(Param::Seed, "100").unwrap();
        assert_eq!(o.next_reply().unwrap().sampler.seed, 100);
    }

    #[test]
    fn saved_options_round_trip_and_are_checked() {
        let mut o = options(&["--top-p", "0.5", "--seed", "1"]);
        let saved = o.saved();
        let mut other = options(&[]);
        other.apply(&saved).unwrap();
        assert_eq!(other.describe(), o.describe());
        assert!(o.apply(&SavedOptions { top_p: Some(2.0), temperature: Some(0.0), ..Default::default() }).is_err());
        assert_eq!(value(&o, "temperature"), "0.8", "all or none");
        assert_eq!(Param::from_name("--Repeat-Penalty"), Some(Param::RepeatPenalty));
    }
}
