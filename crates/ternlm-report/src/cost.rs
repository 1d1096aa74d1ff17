//! What an hour of generating costs, and so a million tokens: a rented machine's price per
//! hour, or for owned hardware its power at an electricity price plus its purchase price
//! spread over the hours it generates. The defaults are public so reports can show them.

use crate::schema::CostBasis;

/// USD per kWh when `--kwh-price` is not given (a typical household tariff).
pub const DEFAULT_KWH_PRICE: f64 = 0.15;
/// Years owned hardware is written off over.
pub const DEFAULT_LIFETIME_YEARS: f64 = 3.0;
/// Share of its lifetime owned hardware spends generating.
pub const DEFAULT_UTILIZATION: f64 = 0.5;
/// Hours in a year (365.25 days).
pub const HOURS_PER_YEAR: f64 = 8766.0;

/// The price inputs of a report, as given or defaulted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostInputs {
    pub price_per_hour: Option<f64>,
    pub kwh_price: f64,
    pub hardware_cost: Option<f64>,
    pub lifetime_years: f64,
    pub utilization: f64,
}

impl Default for CostInputs {
    fn default() -> Self {
        Self { price_per_hour: None, kwh_price: DEFAULT_KWH_PRICE, hardware_cost: None, lifetime_years: DEFAULT_LIFETIME_YEARS, utilization: DEFAULT_UTILIZATION }
    }
}

impl CostInputs {
    /// The basis a report uses: a price per hour when given, else owned hardware when its
    /// power is known (measured or `--watts`), else none.
    pub fn basis(&self, power_known: bool) -> CostBasis {
        if self.price_per_hour.is_some() {
            CostBasis::PricePerHour
        } else if power_known {
            CostBasis::Owned
        } else {
            CostBasis::None
        }
    }

    /// The purchase price per generating hour (0 when no hardware cost is given).
    pub fn amortization_per_hour(&self) -> f64 {
        let hours = self.lifetime_years * HOURS_PER_YEAR * self.utilization;
        if hours > 0.0 { self.hardware_cost.unwrap_or(0.0) / hours } else { 0.0 }
    }

    /// USD per generating hour drawing `watts` (for owned hardware), when the basis allows.
    pub fn usd_per_hour(&self, watts: Option<f64>) -> Option<f64> {
        match (self.price_per_hour, watts) {
            (Some(p), _) => Some(p),
            (None, Some(w)) => Some(w / 1000.0 * self.kwh_price + self.amortization_per_hour()),
            (None, None) => None,
        }
    }
}

/// USD per million tokens at `tokens_per_s` for a machine costing `usd_per_hour`.
pub fn usd_per_mtok(usd_per_hour: f64, tokens_per_s: f64) -> Option<f64> {
    (tokens_per_s > 0.0 && tokens_per_s.is_finite()).then(|| usd_per_hour / (tokens_per_s * 3600.0) * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_and_rented_hours() {
        let rented = CostInputs { price_per_hour: Some(0.36), ..Default::default() };
        assert_eq!(rented.basis(false), CostBasis::PricePerHour);
        assert_eq!(rented.usd_per_hour(Some(500.0)), Some(0.36));
        // 0.36 USD/h at 100 tokens/s: 360,000 tokens an hour, 1 USD per million.
        assert!((usd_per_mtok(0.36, 100.0).unwrap() - 1.0).abs() < 1e-12);
        let owned = CostInputs { hardware_cost: Some(1314.9), ..Default::default() };
        assert_eq!(owned.basis(true), CostBasis::Owned);
        assert_eq!(owned.basis(false), CostBasis::None);
        // 1314.9 USD over 3 years at half use is 0.1 USD an hour; 100 W at 0.15 is 0.015.
        assert!((owned.usd_per_hour(Some(100.0)).unwrap() - 0.115).abs() < 1e-9);
        assert_eq!(owned.usd_per_hour(None), None);
        assert_eq!(usd_per_mtok(1.0, 0.0), None);
    }
}
