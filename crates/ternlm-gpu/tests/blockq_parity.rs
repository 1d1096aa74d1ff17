//! The block-quantized GEMV (Q8_0, Q4_0, Q4_1, F16, Q6_K) against ternlm-kernels'
//! `BlockMatrix::gemm_at(Isa::Scalar)` on random shapes and random GGUF blocks with edge
//! values (zero and subnormal scales, the largest f16, extreme nibbles and bytes, all-zero
//! activation blocks, F16 rows of any width): bit for bit.
//!
//! Without an adapter every test prints `skipped: no adapter` to stderr and returns.

use half::f16;
use ternlm_gpu::{Gpu, GpuBlockKind, GpuError};
use ternlm_kernels::ThreadPool;
use ternlm_kernels::blockq::{BlockKind, BlockMatrix, PreparedActs, WeightBytes};
use ternlm_kernels::isa::Isa;

mod common;

use common::{Rng, gpu, open};

const KINDS: [(GpuBlockKind, BlockKind); 5] =
    [(GpuBlockKind::Q8_0, BlockKind::Q8_0), (GpuBlockKind::Q4_0, BlockKind::Q4_0), (GpuBlockKind::Q4_1, BlockKind::Q4_1), (GpuBlockKind::F16, BlockKind::F16), (GpuBlockKind::Q6K, BlockKind::Q6K)];

/// An f16 scale: mostly ordinary, sometimes an edge (±0, the smallest subnormal, a
/// subnormal, the largest finite half).
fn scale(rng: &mut Rng) -> f16 {
    match rng.below(12) {
        0 => f16::from_f32(0.0),
        1 => f16::from_f32(-0.0),
        2 => f16::from_bits(1),
        3 => f16::from_bits(0x8000 | (1 + rng.below(0x3ff) as u16)),
        4 => f16::MAX,
        _ => f16::from_f32(rng.f32() * [0.001, 0.05, 2.0][rng.below(3)]),
    }
}

/// GGUF bytes of a `rows x cols` matrix: random quantized bytes (some blocks all 0x00, all
/// 0xFF or Q8_0's -128) under edge-including scales, or F16 values.
fn weights(rng: &mut Rng, kind: GpuBlockKind, rows: usize, cols: usize) -> Vec<u8> {
    if kind == GpuBlockKind::F16 {
        return (0..rows * cols)
            .flat_map(|_| {
                let v = match rng.below(20) {
                    0 => f16::from_bits(rng.below(0x400) as u16),
                    1 => f16::MAX,
                    _ => f16::from_f32(rng.f32() * [0.01, 1.0, 30.0][rng.below(3)]),
                };
                v.to_le_bytes()
            })
            .collect();
    }
    let mut out = Vec::with_capacity(rows * cols / kind.block_len() * kind.block_bytes());
    if kind == GpuBlockKind::Q6K {
        // Values and int8 sub-block scales (-128 included) random or all 0x00 / 0xFF / 0x80,
        // then d.
        for _ in 0..rows * cols / 256 {
            let fill = [Some(0x00), Some(0xFF), Some(0x80), None, None, None, None][rng.below(7)];
            out.extend((0..208).map(|_| fill.unwrap_or(rng.next() as u8)));
            out.extend(scale(rng).to_le_bytes());
        }
        return out;
    }
    let scales = if kind == GpuBlockKind::Q4_1 { 2 } else { 1 };
    for _ in 0..rows * cols / 32 {
        for _ in 0..scales {
            out.extend(scale(rng).to_le_bytes());
        }
        let fill = match rng.below(10) {
            0 => Some(0x00),
            1 => Some(0xFF),
            2 => Some(0x80),
            _ => None,
        };
        for _ in 0..kind.block_bytes() - 2 * scales {
            out.push(fill.unwrap_or(rng.next() as u8));
        }
    }
    out
}

/// One token of activations with a spread of magnitudes, and some all-zero 32-value blocks
/// (a zero activation scale).
fn activations(rng: &mut Rng, cols: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..cols).map(|_| rng.f32() * [0.01, 1.0, 7.5, 300.0][rng.below(4)]).collect();
    for b in 0..cols / 32 {
        if rng.below(8) == 0 {
            x[b * 32..b * 32 + 32].fill(0.0);
        }
    }
    x
}

/// Runs one random case on both sides, asserts bit equality and returns the number of chunks.
fn check(gpu: &Gpu, rng: &mut Rng, kinds: (GpuBlockKind, BlockKind), rows: usize, cols: usize) -> usize {
    let (gk, ck) = kinds;
    let bytes = weights(rng, gk, rows, cols);
    let x = activations(rng, cols);
    let cpu = BlockMatrix::new(ck, rows, cols, WeightBytes::from_vec(bytes.clone())).unwrap();
    let mut acts = PreparedActs::default();
    cpu.prepare(&x, &mut acts);
    let mut want = vec![0f32; rows];
    cpu.gemm_at(Isa::Scalar, &ThreadPool::new(1), &acts, &mut want);

    let w = gpu.upload_block(gk, rows, cols, &bytes).unwrap();
    let xa = if gk == GpuBlockKind::F16 { gpu.upload_f16_acts(&acts.float) } else { gpu.upload_q8_acts(&acts.quant.q, &acts.quant.d, &acts.quant.s) }.unwrap();
    let got = gpu.read(&gpu.gemv_block(&w, &xa).unwrap()).unwrap();
    for (r, (g, c)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.to_bits(), c.to_bits(), "{gk:?} row {r} of {rows}x{cols}: gpu {g:e} cpu {c:e}");
    }
    w.chunks()
}

#[test]
fn block_gemv_matches_cpu_scalar() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(0x5EED_B10C);
    for kinds in KINDS {
        let bl = kinds.0.block_len().max(32);
        let mut shapes = vec![(1, bl), (3, 2 * bl), (65, 3 * bl), (130, 18 * bl), (7, 2048)];
        shapes.extend((0..16).map(|_| (1 + rng.below(150), bl * (1 + rng.below(2560 / bl)))));
        if kinds.0 == GpuBlockKind::F16 {
            // Any width: ragged tails of 1-7 columns, and odd widths (rows padded to a word).
            shapes.extend([(5, 1), (4, 7), (9, 9), (33, 101), (17, 577)]);
            shapes.extend((0..12).map(|_| (1 + rng.below(100), 1 + rng.below(700))));
        }
        for &(rows, cols) in &shapes {
            check(gpu, &mut rng, kinds, rows, cols);
        }
    }
}

/// Activations that hit the preparation's edge cases: rounding ties (half-integers under a
/// block maximum of 127, so the multiplier is 1), for the quantized types a signed maximum
/// met twice (+1e6 then -1e6: Q8_K keeps the first) and values past f16's range (the last
/// kept away from F16 weights, whose products would be infinite), tiny magnitudes, zero blocks.
fn edge_activations(rng: &mut Rng, cols: usize, quantized: bool) -> Vec<f32> {
    let mut x = activations(rng, cols);
    for (b, chunk) in x.chunks_mut(32).enumerate() {
        match b % 5 {
            0 => {
                for (i, v) in chunk.iter_mut().enumerate() {
                    *v = i as f32 - 15.5;
                }
                chunk[0] = 127.0;
            }
            1 if quantized && b % 8 == 1 => {
                chunk[3] = 1e6;
                chunk[9] = -1e6;
            }
            2 => chunk.iter_mut().for_each(|v| *v *= 1e-6),
            3 if quantized => chunk.iter_mut().for_each(|v| *v *= 1e3),
            _ => {}
        }
    }
    x
}

#[test]
fn device_prepared_activations_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(0x5EED_B10E);
    for (gk, ck) in KINDS {
        let bl = gk.block_len().max(32);
        let mut shapes: Vec<(usize, usize)> = (0..6).map(|_| (1 + rng.below(60), bl * (1 + rng.below(1024 / bl)))).collect();
        if gk == GpuBlockKind::F16 {
            shapes.extend([(3, 1), (5, 13), (4, 301)]);
        }
        for (rows, cols) in shapes {
            let x = edge_activations(&mut rng, cols, gk != GpuBlockKind::F16);
            let bytes = weights(&mut rng, gk, rows, cols);
            let cpu = BlockMatrix::new(ck, rows, cols, WeightBytes::from_vec(bytes.clone())).unwrap();
            let mut acts = PreparedActs::default();
            cpu.prepare(&x, &mut acts);
            let dev = gpu.prepare_block_acts(gk, &gpu.upload(&x).unwrap()).unwrap();
            let got = gpu.read_block_acts(&dev).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            if gk == GpuBlockKind::F16 {
                assert_eq!(bits(&got.float), bits(&acts.float), "{gk:?} x{cols}");
            } else {
                assert_eq!(got.q, acts.quant.q, "{gk:?} q, x{cols}");
                assert_eq!(bits(&got.d), bits(&acts.quant.d), "{gk:?} d, x{cols}");
                assert_eq!(bits(&got.s), bits(&acts.quant.s), "{gk:?} s, x{cols}");
            }
            // The whole device path: prepared there, multiplied there.
            let mut want = vec![0f32; rows];
            cpu.gemm_at(Isa::Scalar, &ThreadPool::new(1), &acts, &mut want);
            let w = gpu.upload_block(gk, rows, cols, &bytes).unwrap();
            let y = gpu.read(&gpu.gemv_block(&w, &dev).unwrap()).unwrap();
            assert_eq!(bits(&y), bits(&want), "{gk:?} GEMV {rows}x{cols} on device-prepared activations");
        }
    }
    // Past f16's range: F16 activations become infinite, as half's conversion makes them.
    let x = [65504.0, 65519.0, 65520.0, -1e9, 1e-8, -3e-8, 2f32.powi(-25), 0.0, -0.0];
    let mut acts = PreparedActs::default();
    BlockMatrix::new(BlockKind::F16, 1, x.len(), WeightBytes::from_vec(vec![0; 2 * x.len()])).unwrap().prepare(&x, &mut acts);
    let got = gpu.read_block_acts(&gpu.prepare_block_acts(GpuBlockKind::F16, &gpu.upload(&x).unwrap()).unwrap()).unwrap();
    assert_eq!(got.float.iter().map(|f| f.to_bits()).collect::<Vec<_>>(), acts.float.iter().map(|f| f.to_bits()).collect::<Vec<_>>());
}

#[test]
fn f16_tail_rounds_through_f64_as_the_cpu() {
    // Two rows of 1024 from the 8-wide lanes plus a 4-column tail. Row 0 adds 2^-14 (half an
    // f32 ULP of 1024) and 2^-48 (below half an f64 ULP): the CPU's f64 sum drops 2^-48 and
    // the tie rounds to 1024, where rounding the exact sum once would give 1024 + 2^-13.
    // Row 1 adds 2^-15 three times: f64 keeps them (1024 + 2^-13), an f32 sum would not.
    let Some(gpu) = gpu() else { return };
    let (h7, h8, tiny) = (2f32.powi(-7), 2f32.powi(-8), 2f32.powi(-24));
    let x = [32.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, h7, h7, h7, tiny];
    let w = [[32.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, h7, 0.0, 0.0, tiny], [32.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, h8, h8, h8, 0.0]];
    let bytes: Vec<u8> = w.iter().flatten().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect();
    let cpu = BlockMatrix::new(BlockKind::F16, 2, x.len(), WeightBytes::from_vec(bytes.clone())).unwrap();
    let mut acts = PreparedActs::default();
    cpu.prepare(&x, &mut acts);
    let mut want = [0f32; 2];
    cpu.gemm_at(Isa::Scalar, &ThreadPool::new(1), &acts, &mut want);
    assert_eq!(want, [1024.0, 1024.0 + 2f32.powi(-13)], "the case no longer exercises the f64 sum");
    let m = gpu.upload_block(GpuBlockKind::F16, 2, x.len(), &bytes).unwrap();
    let got = gpu.read(&gpu.gemv_block(&m, &gpu.upload_f16_acts(&acts.float).unwrap()).unwrap()).unwrap();
    assert_eq!(got, want);
}

#[test]
fn block_gemv_splits_weights_above_the_binding_limit() {
    // A device of its own: the binding limit is lowered on it.
    let Some(mut gpu) = gpu().and_then(|_| open()) else { return };
    let mut rng = Rng(0x5EED_B10D);
    gpu.set_binding_limit(4 * 9 * 4 * 3);
    for kinds in KINDS {
        // Q6_K: 212-byte rows (two per chunk) and 256 activations (the limit is above 256 bytes).
        let chunks = check(&gpu, &mut rng, kinds, 80, kinds.0.block_len().max(64));
        assert!(chunks >= 8, "{:?}: expected many chunks, got {chunks}", kinds.0);
    }
    gpu.set_binding_limit(64);
    let err = gpu.upload_block(GpuBlockKind::Q8_0, 2, 64, &[0; 2 * 68]).err().expect("a 72-byte row over a 64-byte limit");
    assert!(matches!(err, GpuError::TooLarge { .. }), "{err}");
}

#[test]
fn block_bad_shapes_are_errors() {
    let Some(gpu) = gpu() else { return };
    let shape = |r: Result<ternlm_gpu::GpuBlockMatrix, GpuError>| matches!(r, Err(GpuError::Shape(_)));
    assert!(shape(gpu.upload_block(GpuBlockKind::Q8_0, 2, 48, &[0; 2 * 34])));
    assert!(shape(gpu.upload_block(GpuBlockKind::Q4_0, 2, 32, &[0; 35])));
    assert!(shape(gpu.upload_block(GpuBlockKind::F16, 0, 4, &[])));
    assert!(matches!(gpu.upload_q8_acts(&[0; 40], &[1.0], &[]), Err(GpuError::Shape(_))));
    assert!(matches!(gpu.upload_q8_acts(&[0; 32], &[1.0, 2.0], &[]), Err(GpuError::Shape(_))));
    let q8 = gpu.upload_q8_acts(&[1; 32], &[1.0], &[]).unwrap();
    let f = gpu.upload_f16_acts(&[1.0; 32]).unwrap();
    // Q4_1 needs Q8_1's sums; F16 needs floats; Q8_0 needs quantized values; widths must agree.
    let q41 = gpu.upload_block(GpuBlockKind::Q4_1, 1, 32, &[0; 20]).unwrap();
    assert!(matches!(gpu.gemv_block(&q41, &q8), Err(GpuError::Shape(_))));
    let f16w = gpu.upload_block(GpuBlockKind::F16, 1, 32, &[0; 64]).unwrap();
    assert!(matches!(gpu.gemv_block(&f16w, &q8), Err(GpuError::Shape(_))));
    let q80 = gpu.upload_block(GpuBlockKind::Q8_0, 1, 64, &[0; 68]).unwrap();
    assert!(matches!(gpu.gemv_block(&q80, &q8), Err(GpuError::Shape(_))));
    let q80 = gpu.upload_block(GpuBlockKind::Q8_0, 1, 32, &[0; 34]).unwrap();
    assert!(matches!(gpu.gemv_block(&q80, &f), Err(GpuError::Shape(_))));
    let x = gpu.upload(&[1.0; 48]).unwrap();
    assert!(matches!(gpu.prepare_block_acts(GpuBlockKind::Q4_0, &x), Err(GpuError::Shape(_))));
    assert!(matches!(gpu.prepare_block_acts(GpuBlockKind::Q6K, &gpu.upload(&[1.0; 64]).unwrap()), Err(GpuError::Shape(_))));
    // Q8_0 activations have no sums: a Q4_1 matrix refuses them, also when made on the device.
    let dev = gpu.prepare_block_acts(GpuBlockKind::Q8_0, &gpu.upload(&[1.0; 32]).unwrap()).unwrap();
    assert!(matches!(gpu.gemv_block(&q41, &dev), Err(GpuError::Shape(_))));
}
