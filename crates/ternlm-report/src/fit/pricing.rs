//! What an hour of a machine costs: the on-demand price of a rented one, or for an owned one
//! its energy at an electricity price plus its purchase price spread over its working life.
//! The assumptions are a value the caller prints, never hidden constants.

use super::hardware::Price;

/// Hours in a year (365.25 days).
pub const HOURS_PER_YEAR: f64 = 8766.0;
/// USD per kWh when none is given (about the US residential average).
pub const DEFAULT_KWH_PRICE: f64 = 0.15;
/// Years owned hardware is written off over.
pub const DEFAULT_LIFETIME_YEARS: f64 = 3.0;
/// Share of its lifetime owned hardware spends generating.
pub const DEFAULT_UTILIZATION: f64 = 0.5;

/// The assumptions behind the cost of owned hardware.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pricing {
    /// Electricity, USD per kWh.
    pub kwh_price: f64,
    /// Years the purchase is spread over.
    pub lifetime_years: f64,
    /// Share of those years the machine spends generating (idle hours still cost their share).
    pub utilization: f64,
}

impl Default for Pricing {
    /// 0.15 USD per kWh, three years, half the time busy.
    fn default() -> Self {
        Self { kwh_price: DEFAULT_KWH_PRICE, lifetime_years: DEFAULT_LIFETIME_YEARS, utilization: DEFAULT_UTILIZATION }
    }
}

impl Pricing {
    /// USD per hour of generating on a machine priced `price` drawing `watts`; `None` when
    /// the price is unknown or the assumptions are not positive.
    pub fn usd_per_hour(&self, price: Price, watts: Option<f64>) -> Option<f64> {
        let v = match price {
            Price::PerHour(p) => p,
            Price::Owned { purchase_usd } => {
                if !(self.lifetime_years > 0.0 && self.utilization > 0.0) {
                    return None;
                }
                watts.unwrap_or(0.0) * self.kwh_price / 1000.0 + purchase_usd / (self.lifetime_years * HOURS_PER_YEAR * self.utilization)
            }
            Price::Unknown => return None,
        };
        (v.is_finite() && v >= 0.0).then_some(v)
    }
}

/// USD per million tokens at `tokens_per_s`, from USD per hour.
pub fn usd_per_mtok(usd_per_hour: f64, tokens_per_s: f64) -> Option<f64> {
    (tokens_per_s > 0.0 && tokens_per_s.is_finite()).then(|| usd_per_hour / (tokens_per_s * 3600.0) * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rented_owned_and_unknown_prices() {
        let p = Pricing::default();
        assert_eq!(p.usd_per_hour(Price::PerHour(0.5), Some(100.0)), Some(0.5));
        // 100 W at 0.15 USD/kWh is 0.015 USD/h; 8766 USD over 3 years at 50% is 2/3 USD/h.
        let owned = p.usd_per_hour(Price::Owned { purchase_usd: 8766.0 }, Some(100.0)).unwrap();
        assert!((owned - (0.015 + 8766.0 / (3.0 * 8766.0 * 0.5))).abs() < 1e-12, "{owned}");
        assert_eq!(p.usd_per_hour(Price::Unknown, Some(100.0)), None);
        assert_eq!(Pricing { utilization: 0.0, ..p }.usd_per_hour(Price::Owned { purchase_usd: 1.0 }, None), None);
        // 1 USD/h at 1000 tokens/s: 3.6 M tokens per USD.
        assert!((usd_per_mtok(1.0, 1000.0).unwrap() - 1.0 / 3.6).abs() < 1e-12);
        assert_eq!(usd_per_mtok(1.0, 0.0), None);
    }
}
