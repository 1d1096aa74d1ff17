//! The hardware table: `data/hardware.toml`, embedded in the binary, parsed into
//! [`Hardware`] entries. Every number in the file carries its source, and a table with a
//! missing, non-positive or unsourced number is refused as a whole (a typed error, never a
//! panic), since a prediction from it would look as trustworthy as the others.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::error::FitError;

/// The table as shipped.
const TABLE: &str = include_str!("../../data/hardware.toml");

/// CPU or GPU: the same prediction applies to both, but people choose between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Cpu,
    Gpu,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
        }
    }
}

/// How a machine's bandwidth and int8 rate were obtained, which decides the efficiency
/// factors applied to them ([`super::calibration`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// Vendors' peak numbers (the table).
    Peak,
    /// ternlm's own probes on the machine it runs on (`--hardware this`).
    Probed,
}

/// A number and where it comes from.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sourced {
    pub value: f64,
    pub source: String,
}

/// What an hour of the machine costs is derived from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Price {
    /// Rented: on-demand USD per hour.
    PerHour(f64),
    /// Owned: the purchase price, spread over its life ([`super::Pricing`]), plus energy at
    /// the machine's power.
    Owned { purchase_usd: f64 },
    /// Not known (`--hardware this` without price flags): no cost figures.
    Unknown,
}

/// One machine `fit` predicts for.
#[derive(Clone, Debug, PartialEq)]
pub struct Hardware {
    /// Short id, as `--hardware NAME` takes it.
    pub name: String,
    pub description: String,
    pub kind: Kind,
    pub basis: Basis,
    /// Memory read bandwidth, bytes per second.
    pub memory_bandwidth: f64,
    /// Dense int8 multiply-accumulates per second.
    pub int8_macs_per_s: f64,
    /// Memory the model, its KV cache and the runtime must fit in.
    pub memory_bytes: u64,
    /// Power drawn while generating, when known: energy cost of owned hardware.
    pub tdp_watts: Option<f64>,
    pub price: Price,
    /// `(field, source)` for every number above.
    pub sources: Vec<(String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    hardware: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    description: String,
    kind: Kind,
    memory_bandwidth: Sourced,
    int8_macs_per_s: Sourced,
    memory_bytes: Sourced,
    tdp_watts: Sourced,
    price_per_hour: Option<Sourced>,
    purchase_usd: Option<Sourced>,
}

/// The shipped table.
pub fn table() -> Result<Vec<Hardware>, FitError> {
    parse_table(TABLE)
}

/// Parses and checks a table in the shipped file's format.
pub fn parse_table(text: &str) -> Result<Vec<Hardware>, FitError> {
    let file: TableFile = toml::from_str(text).map_err(|e| FitError::Table(e.to_string().trim().replace('\n', " ")))?;
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(file.hardware.len());
    for e in file.hardware {
        let bad = |reason: String| FitError::BadEntry { name: e.name.clone(), reason };
        if e.name.is_empty() || !e.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(bad("the name must be non-empty letters, digits, '-' or '_'".into()));
        }
        if e.name == "this" {
            return Err(bad("\"this\" names the probed machine".into()));
        }
        if !names.insert(e.name.clone()) {
            return Err(bad("the name appears twice".into()));
        }
        let price = match (&e.price_per_hour, &e.purchase_usd) {
            (Some(p), None) => ("price_per_hour", p),
            (None, Some(p)) => ("purchase_usd", p),
            _ => return Err(bad("needs exactly one of price_per_hour and purchase_usd".into())),
        };
        let numbers = [("memory_bandwidth", &e.memory_bandwidth), ("int8_macs_per_s", &e.int8_macs_per_s), ("memory_bytes", &e.memory_bytes), ("tdp_watts", &e.tdp_watts), price];
        for (field, n) in numbers {
            if !(n.value.is_finite() && n.value > 0.0) {
                return Err(bad(format!("{field} is {}, not a positive number", n.value)));
            }
            if n.source.trim().is_empty() {
                return Err(bad(format!("{field} has no source")));
            }
        }
        let sources = numbers.iter().map(|(f, n)| (f.to_string(), n.source.clone())).collect();
        out.push(Hardware {
            name: e.name.clone(),
            description: e.description.clone(),
            kind: e.kind,
            basis: Basis::Peak,
            memory_bandwidth: e.memory_bandwidth.value,
            int8_macs_per_s: e.int8_macs_per_s.value,
            memory_bytes: e.memory_bytes.value as u64,
            tdp_watts: Some(e.tdp_watts.value),
            price: match e.price_per_hour {
                Some(p) => Price::PerHour(p.value),
                None => Price::Owned { purchase_usd: price.1.value },
            },
            sources,
        });
    }
    if out.is_empty() {
        return Err(FitError::Table("it lists no hardware".into()));
    }
    Ok(out)
}

/// The entry named `name`, or an error listing the valid names.
pub fn find<'a>(table: &'a [Hardware], name: &str) -> Result<&'a Hardware, FitError> {
    table
        .iter()
        .find(|h| h.name == name)
        .ok_or_else(|| FitError::UnknownHardware { name: name.to_string(), valid: table.iter().map(|h| h.name.as_str()).chain(["this"]).collect::<Vec<_>>().join(", ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_parses_with_every_number_positive_and_sourced() {
        let t = table().unwrap();
        assert!(t.len() >= 13, "{} entries", t.len());
        for h in &t {
            assert!(h.memory_bandwidth > 0.0 && h.int8_macs_per_s > 0.0 && h.memory_bytes > 0, "{}", h.name);
            assert!(h.tdp_watts.is_some_and(|w| w > 0.0), "{}", h.name);
            assert!(matches!(h.price, Price::PerHour(p) | Price::Owned { purchase_usd: p } if p > 0.0), "{}", h.name);
            let fields: Vec<&str> = h.sources.iter().map(|(f, _)| f.as_str()).collect();
            for f in ["memory_bandwidth", "int8_macs_per_s", "memory_bytes", "tdp_watts"] {
                assert!(fields.contains(&f), "{}: no source for {f}", h.name);
            }
            assert!(fields.contains(&"price_per_hour") || fields.contains(&"purchase_usd"), "{}", h.name);
            assert!(h.sources.iter().all(|(_, s)| !s.trim().is_empty()), "{}", h.name);
        }
        // Both kinds and both ways of paying are represented.
        assert!(t.iter().any(|h| h.kind == Kind::Gpu) && t.iter().any(|h| h.kind == Kind::Cpu));
        assert!(t.iter().any(|h| matches!(h.price, Price::PerHour(_))) && t.iter().any(|h| matches!(h.price, Price::Owned { .. })));
    }

    const GOOD: &str = r#"
[[hardware]]
name = "x"
description = "d"
kind = "cpu"
memory_bandwidth = { value = 1e9, source = "s" }
int8_macs_per_s = { value = 1e9, source = "s" }
memory_bytes = { value = 1e9, source = "s" }
tdp_watts = { value = 10, source = "s" }
purchase_usd = { value = 100, source = "s" }
"#;

    #[test]
    fn bad_tables_are_typed_errors() {
        assert_eq!(parse_table(GOOD).unwrap().len(), 1);
        assert!(matches!(parse_table("not toml ["), Err(FitError::Table(_))));
        assert!(matches!(parse_table("hardware = []"), Err(FitError::Table(_))));
        let cases = [
            GOOD.replace("value = 10,", "value = 0,"),
            GOOD.replace("value = 10, source = \"s\"", "value = 10, source = \" \""),
            GOOD.replace("purchase_usd = { value = 100, source = \"s\" }", ""),
            format!("{GOOD}price_per_hour = {{ value = 1, source = \"s\" }}"),
            format!("{GOOD}{GOOD}"),
            GOOD.replace("name = \"x\"", "name = \"this\""),
            GOOD.replace("1e9, source", "nan, source"),
        ];
        for c in cases {
            assert!(matches!(parse_table(&c), Err(FitError::BadEntry { .. })), "{c}");
        }
        // A missing number or an unknown field is a shape error.
        assert!(matches!(parse_table(&GOOD.replace("tdp_watts", "tdp")), Err(FitError::Table(_))));
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let t = parse_table(GOOD).unwrap();
        assert_eq!(find(&t, "x").unwrap().name, "x");
        let e = find(&t, "nope").unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("x, this"), "{e}");
    }
}
