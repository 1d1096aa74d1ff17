//! Token sampling: repetition, presence and frequency penalties, then top-k, top-p, min-p and temperature, then a draw
//! from a seeded generator (llama.cpp's order). Temperature 0 is greedy. The generator is
//! SplitMix64, so a seed gives the same tokens on every platform and every build.

use std::collections::VecDeque;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    /// Subtracted from the logit of every token among the recent ones (OpenAI's
    /// `presence_penalty`; 0: off).
    pub presence_penalty: f32,
    /// Subtracted once per occurrence among the recent tokens (OpenAI's
    /// `frequency_penalty`; 0: off).
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// llama.cpp's defaults.
    fn default() -> Self {
        Self { temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05, repeat_penalty: 1.0, presence_penalty: 0.0, frequency_penalty: 0.0, repeat_last_n: 64, seed: 0 }
    }
}

impl SamplerConfig {
    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::default() }
    }
}

pub struct Sampler {
    cfg: SamplerConfig,
    state: u64,
    recent: VecDeque<u32>,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Self {
        let state = cfg.seed;
        Self { cfg, state, recent: VecDeque::new() }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Remembers tokens (prompt or generated) for the repetition penalty.
    pub fn accept(&mut self, token: u32) {
        if self.cfg.repeat_last_n == 0 {
            return;
        }
        if self.recent.len() == self.cfg.repeat_last_n {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    fn next_f64(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks the next token from `logits` (one per vocabulary entry).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let penalize = (self.cfg.repeat_penalty != 1.0 && self.cfg.repeat_penalty > 0.0) || self.cfg.presence_penalty != 0.0 || self.cfg.frequency_penalty != 0.0;
        if self.cfg.temperature <= 0.0 && !penalize {
            // Plain greedy decoding: no candidate list to build on every token.
            return first_max(logits);
        }
        let mut cands: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
        if penalize {
            let mut seen: Vec<u32> = self.recent.iter().copied().collect();
            seen.sort_unstable();
            let rp = if self.cfg.repeat_penalty > 0.0 { self.cfg.repeat_penalty } else { 1.0 };
            for run in seen.chunk_by(|a, b| a == b) {
                if let Some(c) = cands.get_mut(run[0] as usize) {
                    c.1 = if c.1 > 0.0 { c.1 / rp } else { c.1 * rp };
                    c.1 -= self.cfg.presence_penalty + self.cfg.frequency_penalty * run.len() as f32;
                }
            }
        }
        if self.cfg.temperature <= 0.0 {
            return argmax(&cands);
        }
        // Descending by logit; ties keep the lower id first.
        cands.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.cfg.top_k > 0 {
            cands.truncate(self.cfg.top_k.max(1));
        }
        let mut probs = softmax_of(&cands);
        if self.cfg.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= self.cfg.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cands.truncate(keep.max(1));
            probs = softmax_of(&cands);
        }
        if self.cfg.min_p > 0.0 {
            let floor = probs[0] * self.cfg.min_p;
            let keep = probs.iter().take_while(|&&p| p >= floor).count().max(1);
            cands.truncate(keep);
        }
        for c in &mut cands {
            c.1 /= self.cfg.temperature;
        }
        let probs = softmax_of(&cands);
        let r = self.next_f64();
        let mut cum = 0.0;
        for (c, p) in cands.iter().zip(&probs) {
            cum += f64::from(*p);
            if r < cum {
                return c.0;
            }
        }
        cands.last().map_or(0, |c| c.0)
    }
}

/// The index of the first largest value.
fn first_max(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn argmax(c: &[(u32, f32)]) -> u32 {
    let mut best = 0;
    for (i, x) in c.iter().enumerate() {
        if x.1 > c[best].1 {
            best = i;
        }
    }
    c.get(best).map_or(0, |x| x.0)
}

fn softmax_of(c: &[(u32, f32)]) -> Vec<f32> {
    let max = c.iter().fold(f32::NEG_INFINITY, |m, x| m.max(x.1));
    let e: Vec<f32> = c.iter().map(|x| (x.1 - max).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_first_maximum() {
        let mut s = Sampler::new(SamplerConfig::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 / 3.0).collect();
        let cfg = SamplerConfig { seed: 42, top_k: 0, top_p: 1.0, min_p: 0.0, temperature: 1.0, ..Default::default() };
        let run = |cfg: &SamplerConfig| {
            let mut s = Sampler::new(cfg.clone());
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(&cfg), run(&cfg));
        assert_ne!(run(&cfg), run(&SamplerConfig { seed: 43, ..cfg.clone() }));
    }

    #[test]
    fn top_k_one_is_greedy_and_min_p_cuts_the_tail() {
        let logits = [1.0, 5.0, 4.9, -3.0];
        let mut s = Sampler::new(SamplerConfig { top_k: 1, seed: 7, ..Default::default() });
        assert!((0..20).all(|_| s.sample(&logits) == 1));
        let mut s = Sampler::new(SamplerConfig { top_k: 0, top_p: 1.0, min_p: 0.5, seed: 9, temperature: 1.0, ..Default::default() });
        assert!((0..50).all(|_| matches!(s.sample(&logits), 1 | 2)));
    }

    #[test]
    fn repetition_penalty_discourages_recent_tokens() {
        let mut p = Sampler::new(SamplerConfig { presence_penalty: 1.5, ..SamplerConfig::greedy() });
        p.accept(0);
        assert_eq!(p.sample(&[2.0, 1.0]), 1, "presence penalty 1.5 drops a seen 2.0 below 1.0");
        let mut f = Sampler::new(SamplerConfig { frequency_penalty: 0.4, ..SamplerConfig::greedy() });
        f.accept(0);
        f.accept(0);
        assert_eq!(f.sample(&[2.0, 1.5]), 1, "two occurrences at 0.4 each drop 2.0 to 1.2");
        let mut s = Sampler::new(SamplerConfig { repeat_penalty: 2.0, ..SamplerConfig::greedy() });
        s.accept(0);
        assert_eq!(s.sample(&[3.0, 2.0]), 1);
    }
}
