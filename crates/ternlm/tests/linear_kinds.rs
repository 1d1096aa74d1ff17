//! Every weight type's matrix product against the format crate's dequantization (the
//! reference semantics of each layout): random blocks, random activations, random shapes.
//! The kernel must equal `dequantized W · dequantized quantized-x` up to float rounding.

use half::f16;
use proptest::prelude::*;
use ternlm::linear::{Linear, Prepared};
use ternlm_format::dequant::dequantize_row;
use ternlm_format::gguf::writer::{TensorData, to_bytes};
use ternlm_format::{GgufFile, TensorType};
use ternlm_kernels::ThreadPool;

fn random_block(ty: TensorType, next: &mut impl FnMut() -> u64) -> Vec<u8> {
    let n = ty.block_bytes();
    let mut b: Vec<u8> = (0..n).map(|_| next() as u8).collect();
    let put_f16 = |b: &mut Vec<u8>, at: usize, v: f32| b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
    let small = |next: &mut dyn FnMut() -> u64| ((next() % 2000) as f32 / 1000.0 - 1.0) * 0.05;
    match ty {
        TensorType::F16 | TensorType::BF16 | TensorType::F32 => {
            b.clear();
            for _ in 0..(n / if ty == TensorType::F32 { 4 } else { 2 }) {
                let v = small(next) * 20.0;
                match ty {
                    TensorType::F16 => b.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
                    TensorType::BF16 => b.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
                    _ => b.extend_from_slice(&v.to_le_bytes()),
                }
            }
        }
        TensorType::Q4_0 | TensorType::Q8_0 => put_f16(&mut b, 0, small(next)),
        TensorType::Q4_1 | TensorType::Q4K => {
            put_f16(&mut b, 0, small(next));
            put_f16(&mut b, 2, small(next));
        }
        TensorType::Q6K => put_f16(&mut b, 208, small(next)),
        _ => unreachable!(),
    }
    b
}

fn check(ty: TensorType, rows: usize, blocks: usize, n: usize, seed: u64) -> Result<(), TestCaseError> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let cols = blocks * ty.block_len();
    let data: Vec<u8> = (0..rows * blocks).flat_map(|_| random_block(ty, &mut next)).collect();
    let t = [TensorData { name: "w".into(), dims: vec![cols as u64, rows as u64], ty, data: &data }];
    let path = std::env::temp_dir().join(format!("ternlm-linear-{}-{seed}-{}.gguf", std::process::id(), ty.name()));
    std::fs::write(&path, to_bytes(&[], &t).unwrap()).unwrap();
    let file = std::sync::Arc::new(GgufFile::open(&path).unwrap());
    let _ = std::fs::remove_file(&path);
    let info = file.tensors[0].clone();
    let pool = ThreadPool::new(2);
    let lin = Linear::from_tensor(&file, &pool, &info).unwrap();

    let x: Vec<f32> = (0..n * cols).map(|_| (next() % 2001) as f32 / 200.0 - 5.0).collect();
    let mut prep = Prepared::default();
    let mut out = vec![0f32; n * rows];
    lin.forward(&pool, &x, &mut prep, &mut out);

    // What the kernel saw of x: its quantized values (or x rounded to the weight's float type).
    let q = prep.quant();
    let xs: Vec<f32> = match ty {
        TensorType::F32 => x.clone(),
        TensorType::F16 => x.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
        TensorType::BF16 => x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect(),
        _ => (0..n * cols).map(|i| f32::from(q.q[i]) * q.d[i / q.block_len]).collect(),
    };
    let mut w = vec![0f32; cols];
    for r in 0..rows {
        dequantize_row(ty, file.data(&info), cols, rows * cols, r, "w", &mut w).unwrap();
        for t in 0..n {
            let want: f64 = w.iter().zip(&xs[t * cols..(t + 1) * cols]).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
            let got = f64::from(out[t * rows + r]);
            let scale: f64 = w.iter().zip(&xs[t * cols..(t + 1) * cols]).map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs()).sum();
            // Q8_1 carries `d·Σq` rounded to f16 (as ggml does) for Q4_1's offset term, so that
            // term is only good to f16 precision.
            let tol = if ty == TensorType::Q4_1 { 2e-3 } else { 1e-4 };
            prop_assert!((got - want).abs() <= tol * scale.max(1e-3), "{ty} t{t} r{r}: {got} vs {want}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn block_types_match_dequantized_math(
        ty in prop::sample::select(vec![TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q4_0, TensorType::Q4_1, TensorType::Q8_0, TensorType::Q4K, TensorType::Q6K]),
        rows in 1usize..12,
        blocks in 1usize..4,
        n in 1usize..4,
        seed in any::<u64>(),
    ) {
        let blocks = if ty.block_len() == 1 { blocks * 8 } else { blocks };
        check(ty, rows, blocks, n, seed)?;
    }
}
