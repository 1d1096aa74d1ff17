//! `ternlm dummy`: write a random ternary model at a real model's shape.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use ternlm::WeightType;
use ternlm::dummy::{DummySpec, SHAPES, Shape, write_dummy};

use super::{check_writable, parse_type};
use crate::cli::DummyArgs;
use crate::load::naming_path;
use crate::out::note;

pub fn dummy(a: DummyArgs) -> Result<ExitCode> {
    let Some(shape) = Shape::by_name(&a.shape) else {
        bail!("--shape {:?} is not one of {}", a.shape, SHAPES.iter().map(|s| s.name).collect::<Vec<_>>().join(", "));
    };
    let linear_type = parse_type(&a.ty, &[WeightType::TQ2_0, WeightType::TQ1_0, WeightType::I2S], "--type")?;
    let head_type = parse_type(&a.head, &[WeightType::F16, WeightType::Q6K, WeightType::Q8_0], "--head")?;
    check_writable(&a.output)?;
    let start = Instant::now();
    let spec = DummySpec { shape, linear_type, head_type, seed: a.seed, arch: a.arch.clone() };
    let report = naming_path(write_dummy(&spec, &a.output), "writing", &a.output)?;
    for f in &report.fallbacks {
        note!("note: {f}");
    }
    note!(
        "wrote {}: shape {} ({}), {} linears, {} head, {:.2} G parameters, {:.1} MB in {:.1} s",
        a.output.display(),
        shape.name,
        shape.about,
        linear_type,
        head_type,
        report.parameters as f64 / 1e9,
        report.bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
