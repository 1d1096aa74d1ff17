//! The prediction for one model on one machine: decode and prefill tokens per second from a
//! roofline (the slower of memory traffic and arithmetic, each at its calibrated efficiency),
//! the memory the run needs and whether the machine has it, and the cost per million tokens.
//! [`rank`] orders predictions "what to buy": those that fit first, cheapest per token first.

use std::cmp::Ordering;

use super::calibration::efficiency;
use super::cost::ModelCost;
use super::hardware::{Basis, Hardware, Kind};
use super::pricing::{Pricing, usd_per_mtok};

/// Which ceiling limits decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    Memory,
    Compute,
}

impl Bound {
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Compute => "compute",
        }
    }
}

/// One model on one machine at one context size.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub hardware: String,
    pub description: String,
    pub kind: Kind,
    pub basis: Basis,
    /// Context size the prediction is for: the KV cache holds this many positions, and decode
    /// is costed at the mean position of a run that fills it (`ctx / 2`).
    pub ctx: usize,
    pub decode_tokens_per_s: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_bound: Bound,
    /// Bytes and MACs of a decode step at the mean position.
    pub bytes_per_token: f64,
    pub macs_per_token: f64,
    pub weight_bytes: u64,
    pub kv_bytes: u64,
    pub runtime_bytes: u64,
    /// Weights + KV cache + runtime.
    pub memory_bytes: u64,
    pub memory_available_bytes: u64,
    pub fits: bool,
    pub usd_per_hour: Option<f64>,
    pub usd_per_mtok: Option<f64>,
}

/// Predicts `cost` on `hw` with a `ctx`-position context, priced by `pricing`.
pub fn predict(cost: &ModelCost, hw: &Hardware, ctx: usize, pricing: &Pricing) -> Prediction {
    let eff = efficiency(hw.basis);
    let pos = ctx / 2;
    let bytes = cost.decode_bytes_at(pos);
    let macs = cost.decode_macs_at(pos);
    let by_memory = eff.bandwidth * hw.memory_bandwidth / bytes;
    let compute = eff.compute(cost.ternary) * hw.int8_macs_per_s;
    let by_compute = compute / macs;
    let (decode, bound) = if by_memory <= by_compute { (by_memory, Bound::Memory) } else { (by_compute, Bound::Compute) };
    // Prefill is costed at decode's mean position too: a prompt that fills the context
    // attends to half of it on average.
    let prefill = compute / macs;
    let kv_bytes = cost.kv_bytes(ctx);
    let runtime_bytes = cost.runtime_bytes(ctx);
    let memory_bytes = cost.weight_bytes.saturating_add(kv_bytes).saturating_add(runtime_bytes);
    let usd_per_hour = pricing.usd_per_hour(hw.price, hw.tdp_watts);
    Prediction {
        hardware: hw.name.clone(),
        description: hw.description.clone(),
        kind: hw.kind,
        basis: hw.basis,
        ctx,
        decode_tokens_per_s: decode,
        prefill_tokens_per_s: prefill,
        decode_bound: bound,
        bytes_per_token: bytes,
        macs_per_token: macs,
        weight_bytes: cost.weight_bytes,
        kv_bytes,
        runtime_bytes,
        memory_bytes,
        memory_available_bytes: hw.memory_bytes,
        fits: memory_bytes <= hw.memory_bytes,
        usd_per_hour,
        usd_per_mtok: usd_per_hour.and_then(|u| usd_per_mtok(u, decode)),
    }
}

/// Sorts "what to buy": machines the model fits on first, each group cheapest per token
/// first (unknown costs last), ties by decode speed, fastest first.
pub fn rank(predictions: &mut [Prediction]) {
    let cost = |p: &Prediction| p.usd_per_mtok.unwrap_or(f64::INFINITY);
    predictions
        .sort_by(|a, b| b.fits.cmp(&a.fits).then(cost(a).partial_cmp(&cost(b)).unwrap_or(Ordering::Equal)).then(b.decode_tokens_per_s.partial_cmp(&a.decode_tokens_per_s).unwrap_or(Ordering::Equal)));
}

#[cfg(test)]
mod tests {
    use super::super::cost::tests::cfg_2b4t;
    use super::super::hardware::Price;
    use super::*;

    fn hw(name: &str, memory_bytes: u64, price: Price) -> Hardware {
        Hardware {
            name: name.into(),
            description: String::new(),
            kind: Kind::Cpu,
            basis: Basis::Probed,
            memory_bandwidth: 50e9,
            int8_macs_per_s: 1e12,
            memory_bytes,
            tdp_watts: Some(100.0),
            price,
            sources: Vec::new(),
        }
    }

    fn cost() -> ModelCost {
        let linear: u64 = 30 * (2560 * 2560 * 2 + 2 * 2560 * 640 + 3 * 2560 * 6912);
        ModelCost::from_parts("m".into(), &cfg_2b4t(), linear + 128256 * 2560, 1_000_000_000).unwrap()
    }

    #[test]
    fn memory_is_weights_kv_and_runtime_and_decides_fits() {
        let c = cost();
        let p = predict(&c, &hw("a", 2_000_000_000, Price::PerHour(1.0)), 4096, &Pricing::default());
        assert_eq!(p.kv_bytes, 4096 * 2 * 30 * 640 * 2);
        assert_eq!(p.runtime_bytes, c.runtime_bytes(4096));
        assert_eq!(p.memory_bytes, 1_000_000_000 + p.kv_bytes + p.runtime_bytes);
        assert!(p.fits);
        let small = predict(&c, &hw("b", p.memory_bytes - 1, Price::PerHour(1.0)), 4096, &Pricing::default());
        assert!(!small.fits);
        let exact = predict(&c, &hw("b", p.memory_bytes, Price::PerHour(1.0)), 4096, &Pricing::default());
        assert!(exact.fits);
        // An absurd context saturates instead of wrapping round to a small number.
        let huge = predict(&c, &hw("h", u64::MAX - 1, Price::PerHour(1.0)), usize::MAX, &Pricing::default());
        assert!(!huge.fits && huge.memory_bytes == u64::MAX);
    }

    #[test]
    fn speeds_follow_the_roofline_and_cost_follows_speed() {
        let c = cost();
        let eff = efficiency(Basis::Probed);
        let p = predict(&c, &hw("a", u64::MAX, Price::PerHour(0.36)), 2, &Pricing::default());
        // At position 1 the weights dominate: memory-bound at eff x 50 GB/s.
        let by_memory = eff.bandwidth * 50e9 / c.decode_bytes_at(1);
        let by_compute = eff.ternary_compute * 1e12 / c.decode_macs_at(1);
        assert_eq!(p.decode_tokens_per_s, by_memory.min(by_compute));
        assert_eq!(p.prefill_tokens_per_s, by_compute);
        // Other weights reach a smaller share of the int8 rate.
        let q4 = ModelCost { ternary: false, ..c.clone() };
        let pq = predict(&q4, &hw("a", u64::MAX, Price::PerHour(0.36)), 2, &Pricing::default());
        assert_eq!(pq.prefill_tokens_per_s, eff.other_compute * 1e12 / c.decode_macs_at(1));
        // 0.36 USD/h at r tokens/s: 0.36 / (3600 r) per token, x 1e6.
        let want = 0.36 / (p.decode_tokens_per_s * 3600.0) * 1e6;
        assert!((p.usd_per_mtok.unwrap() - want).abs() < 1e-12 * want);
        // Owned: energy plus purchase over 3 years at 50%.
        let owned = predict(&c, &hw("o", u64::MAX, Price::Owned { purchase_usd: 2000.0 }), 2, &Pricing::default());
        let per_hour = 100.0 * 0.15 / 1000.0 + 2000.0 / (3.0 * 8766.0 * 0.5);
        assert!((owned.usd_per_hour.unwrap() - per_hour).abs() < 1e-12);
        // A longer context reads the KV cache too: slower decode.
        let long = predict(&c, &hw("a", u64::MAX, Price::PerHour(0.36)), 4096, &Pricing::default());
        assert!(long.decode_tokens_per_s < p.decode_tokens_per_s);
        let unpriced = predict(&c, &hw("u", u64::MAX, Price::Unknown), 2, &Pricing::default());
        assert_eq!((unpriced.usd_per_hour, unpriced.usd_per_mtok), (None, None));
    }

    #[test]
    fn ranking_puts_fitting_cheap_machines_first() {
        let c = cost();
        let pricing = Pricing::default();
        let mut ps: Vec<Prediction> =
            [hw("dear", u64::MAX, Price::PerHour(9.0)), hw("small", 1, Price::PerHour(0.01)), hw("unpriced", u64::MAX, Price::Unknown), hw("cheap", u64::MAX, Price::PerHour(0.1))]
                .iter()
                .map(|h| predict(&c, h, 16, &pricing))
                .collect();
        rank(&mut ps);
        let names: Vec<&str> = ps.iter().map(|p| p.hardware.as_str()).collect();
        assert_eq!(names, ["cheap", "dear", "unpriced", "small"]);
    }
}
