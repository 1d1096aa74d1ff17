//! `ternlm fit`: predicted speed, memory and cost per million tokens of a model on hardware
//! from ternlm's table, on this machine (`--hardware this`, probed), or ranked over the
//! whole table ("what to buy"). Only the model's header is read; the arithmetic lives in
//! `ternlm_report::fit`.

use std::process::ExitCode;

use anyhow::{Result, bail};
use serde_json::{Value, json};
use ternlm_report::fit::{self, Basis, Hardware, ModelCost, Prediction, Price, Pricing};

use super::human_bytes;
use crate::cli::FitArgs;
use crate::load::{model_path, naming_path};
use crate::out::outln;

/// Context of a prediction when `--ctx` is not given and the model trained on more: what
/// `ternlm run` allocates by default.
const DEFAULT_CTX: usize = 4096;

pub fn fit(args: FitArgs) -> Result<ExitCode> {
    let pricing = pricing(&args)?;
    let this = args.hardware.as_deref() == Some("this");
    if !this && (args.price_per_hour.is_some() || args.watts.is_some() || args.hardware_cost.is_some()) {
        bail!("--price-per-hour, --watts and --hardware-cost price this machine: use them with --hardware this");
    }
    let table = fit::table()?;
    // An unknown name is refused before the model is read or fetched.
    let chosen: Option<&Hardware> = match args.hardware.as_deref() {
        Some("this") | None => None,
        Some(name) => Some(fit::hardware::find(&table, name)?),
    };
    let threads = crate::load::threads(args.threads)?;
    let arg = args.model.as_deref().or(args.model_flag.as_deref());
    let path = model_path(arg)?;
    let cost = naming_path(ModelCost::from_file(&path, threads), "reading", &path)?;
    let ctx = args.ctx.unwrap_or(cost.n_ctx_train.min(DEFAULT_CTX));
    if ctx == 0 {
        bail!("--ctx must be at least 1");
    }

    let machines: Vec<Hardware> = match (this, chosen) {
        (true, _) => vec![this_machine(&args, threads, &cost)],
        (false, Some(h)) => vec![h.clone()],
        (false, None) => table,
    };
    let mut predictions: Vec<Prediction> = machines.iter().map(|h| fit::predict(&cost, h, ctx, &pricing)).collect();
    fit::rank(&mut predictions);

    if args.json {
        let list: Vec<Value> = predictions.iter().map(|p| prediction_json(p, &machines, &cost, &pricing)).collect();
        outln!("{}", Value::Array(list))?;
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&cost, ctx, &predictions, &pricing)?;
    Ok(ExitCode::SUCCESS)
}

/// The owned-hardware assumptions, checked: a negative price or a utilization above one
/// would rank machines by nonsense.
fn pricing(args: &FitArgs) -> Result<Pricing> {
    if !(args.kwh_price.is_finite() && args.kwh_price >= 0.0) {
        bail!("--kwh-price must be a price of zero or more, not {}", args.kwh_price);
    }
    if !(args.lifetime_years.is_finite() && args.lifetime_years > 0.0) {
        bail!("--lifetime-years must be more than zero, not {}", args.lifetime_years);
    }
    if !(args.utilization > 0.0 && args.utilization <= 1.0) {
        bail!("--utilization must be more than 0 and at most 1, not {}", args.utilization);
    }
    for (flag, v) in [("--price-per-hour", args.price_per_hour), ("--watts", args.watts), ("--hardware-cost", args.hardware_cost)] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            bail!("{flag} must be zero or more, not {v}");
        }
    }
    Ok(Pricing { kwh_price: args.kwh_price, lifetime_years: args.lifetime_years, utilization: args.utilization })
}

/// This machine, probed, priced from the flags: rented with `--price-per-hour`, owned with
/// `--watts` and/or `--hardware-cost`, else unpriced.
fn this_machine(args: &FitArgs, threads: usize, cost: &ModelCost) -> Hardware {
    let mut h = fit::this_machine(threads, cost.bytes_per_token, &cost.main_types);
    if h.memory_bytes == 0 {
        crate::out::note!("ternlm: note: this machine's memory is unknown (no /proc/meminfo); nothing is said to fit");
    }
    h.tdp_watts = args.watts;
    h.price = match (args.price_per_hour, args.watts, args.hardware_cost) {
        (Some(p), _, _) => Price::PerHour(p),
        (None, None, None) => Price::Unknown,
        (None, _, cost) => Price::Owned { purchase_usd: cost.unwrap_or(0.0) },
    };
    h
}

fn basis_name(b: Basis) -> &'static str {
    match b {
        Basis::Peak => "peak",
        Basis::Probed => "probed",
    }
}

fn price_json(p: Price) -> Value {
    match p {
        Price::PerHour(v) => json!({"price_per_hour": v}),
        Price::Owned { purchase_usd } => json!({"purchase_usd": purchase_usd}),
        Price::Unknown => Value::Null,
    }
}

fn prediction_json(p: &Prediction, machines: &[Hardware], cost: &ModelCost, pricing: &Pricing) -> Value {
    let hw = machines.iter().find(|h| h.name == p.hardware);
    json!({
        "hardware": p.hardware,
        "description": p.description,
        "kind": p.kind.name(),
        "basis": basis_name(p.basis),
        "model": cost.name,
        "ctx": p.ctx,
        "decode_tokens_per_s": p.decode_tokens_per_s,
        "prefill_tokens_per_s": p.prefill_tokens_per_s,
        "decode_bound": p.decode_bound.name(),
        "bytes_per_token": p.bytes_per_token,
        "macs_per_token": p.macs_per_token,
        "weight_bytes": p.weight_bytes,
        "kv_bytes": p.kv_bytes,
        "runtime_bytes": p.runtime_bytes,
        "memory_bytes": p.memory_bytes,
        "memory_available_bytes": p.memory_available_bytes,
        "fits": p.fits,
        "memory_bandwidth": hw.map(|h| h.memory_bandwidth),
        "int8_macs_per_s": hw.map(|h| h.int8_macs_per_s),
        "tdp_watts": hw.and_then(|h| h.tdp_watts),
        "price": hw.map_or(Value::Null, |h| price_json(h.price)),
        "usd_per_hour": p.usd_per_hour,
        "usd_per_mtok": p.usd_per_mtok,
        "pricing": {"kwh_price": pricing.kwh_price, "lifetime_years": pricing.lifetime_years, "utilization": pricing.utilization},
    })
}

fn print_table(cost: &ModelCost, ctx: usize, predictions: &[Prediction], pricing: &Pricing) -> Result<()> {
    outln!(
        "{}: {} of weights; a decode token reads {} and does {:.3} G MACs (at position {}, the mean of a {ctx}-token context); KV cache {:.1} KB per position",
        cost.name,
        human_bytes(cost.weight_bytes),
        human_bytes(cost.decode_bytes_at(ctx / 2) as u64),
        cost.decode_macs_at(ctx / 2) / 1e9,
        ctx / 2,
        cost.kv_bytes_per_position as f64 / 1e3
    )?;
    outln!()?;
    outln!("{:<30} {:<4} {:>10} {:>11} {:>10} {:>10} {:>5} {:>9} {:>10}", "hardware", "kind", "decode t/s", "prefill t/s", "memory", "available", "fits", "USD/hour", "USD/Mtok")?;
    for p in predictions {
        let usd = |v: Option<f64>, prec: usize| v.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"));
        outln!(
            "{:<30} {:<4} {:>10.1} {:>11.1} {:>10} {:>10} {:>5} {:>9} {:>10}",
            p.hardware,
            p.kind.name(),
            p.decode_tokens_per_s,
            p.prefill_tokens_per_s,
            human_bytes(p.memory_bytes),
            human_bytes(p.memory_available_bytes),
            if p.fits { "yes" } else { "NO" },
            usd(p.usd_per_hour, 3),
            usd(p.usd_per_mtok, 3)
        )?;
    }
    outln!()?;
    outln!(
        "ranked: hardware the model fits on first, cheapest per token first; those it does not fit on (fits NO) follow. Owned hardware: {} USD/kWh at its TDP, purchase over {} years at {:.0}% utilization (--kwh-price, --lifetime-years, --utilization); rented: on-demand price. Speeds are predictions from each entry's peak bandwidth and int8 rate (`--hardware this` probes this machine); see the README's `ternlm fit`.",
        pricing.kwh_price,
        pricing.lifetime_years,
        pricing.utilization * 100.0
    )?;
    Ok(())
}
