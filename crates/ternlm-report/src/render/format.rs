//! Number formatting shared by the tables and the charts: three significant digits, and
//! `-` for anything missing or not a number, so a broken measurement never prints as
//! `NaN` or `inf`.

use crate::schema::Stat;

/// What a missing value prints as.
pub(crate) const MISSING: &str = "-";

/// `v` to three significant digits (integers from 100 up; exponent form past a million,
/// where digits stop being readable).
pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        return MISSING.to_string();
    }
    let a = v.abs();
    if a == 0.0 {
        return "0".to_string();
    }
    if !(1e-4..1e6).contains(&a) {
        return format!("{v:.2e}");
    }
    // Digits after the point that leave three significant ones.
    let decimals = (2 - a.log10().floor() as i32).clamp(0, 6) as usize;
    format!("{v:.decimals$}")
}

/// [`num`] of a value that may be missing.
pub(crate) fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| MISSING.to_string(), num)
}

/// [`num`] of `v * scale`, for unit changes (bytes to MB, shares to percent).
pub(crate) fn scaled(v: Option<f64>, scale: f64) -> String {
    opt(v.map(|v| v * scale))
}

/// Whether a stat holds a measurement: a stat of no samples was not measured.
pub(crate) fn measured(s: &Stat) -> bool {
    s.median.is_finite() && !(s.samples.is_empty() && s.median == 0.0)
}

/// `median (min..max)` of a stat, times `scale`.
pub(crate) fn spread(s: &Stat, scale: f64) -> String {
    if !measured(s) {
        return MISSING.to_string();
    }
    if s.samples.len() > 1 { format!("{} ({}..{})", num(s.median * scale), num(s.min * scale), num(s.max * scale)) } else { num(s.median * scale) }
}

/// The median of a stat times `scale`, or `-`.
pub(crate) fn median(s: &Stat, scale: f64) -> String {
    if measured(s) { num(s.median * scale) } else { MISSING.to_string() }
}

/// A size in binary units (caches and memory are sized in powers of two).
pub(crate) fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{} {}", num(v), UNITS[unit])
}

/// US dollars with cents, or more digits for small amounts.
pub(crate) fn usd(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v.abs() >= 0.01 => format!("${v:.2}"),
        Some(v) if v.is_finite() => format!("${}", num(v)),
        _ => MISSING.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_significant_digits() {
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.012345), "0.0123");
        assert_eq!(num(123.45), "123");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(f64::NAN), "-");
        assert_eq!(num(f64::INFINITY), "-");
        assert_eq!(num(2.5e9), "2.50e9");
        assert_eq!(binary_size(48 * 1024), "48.0 KiB");
    }
}
