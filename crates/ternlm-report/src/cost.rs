//! What an hour of generating on this machine costs in a report, and so a million tokens:
//! the report's price flags turned into [`fit::pricing`](crate::fit::pricing)'s terms (one
//! formula for `report` and `fit`), with the report's rule for which basis applies.

pub use crate::fit::pricing::{DEFAULT_KWH_PRICE, DEFAULT_LIFETIME_YEARS, DEFAULT_UTILIZATION, usd_per_mtok};
use crate::fit::{Price, Pricing};
use crate::schema::CostBasis;

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

    /// USD per generating hour drawing `watts`: the given price, or for owned hardware its
    /// energy plus its purchase price (0 when `--hardware-cost` is not given) over its life;
    /// `None` when neither a price nor the power is known.
    pub fn usd_per_hour(&self, watts: Option<f64>) -> Option<f64> {
        let pricing = Pricing { kwh_price: self.kwh_price, lifetime_years: self.lifetime_years, utilization: self.utilization };
        match (self.price_per_hour, watts) {
            (Some(p), _) => pricing.usd_per_hour(Price::PerHour(p), watts),
            (None, Some(_)) => pricing.usd_per_hour(Price::Owned { purchase_usd: self.hardware_cost.unwrap_or(0.0) }, watts),
            (None, None) => None,
        }
    }
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
    }
}
