//! Tests of the ternary layout and kernels: hand cases, every ISA level against the scalar
//! reference (bit for bit) and the scalar reference against the definition, on random shapes
//! with ragged column tails, ragged row and token tiles, shared and per-block scales.

use super::*;
use proptest::prelude::*;

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

fn pack(trits: &[i8], rows: usize, cols: usize) -> Vec<u8> {
    let rb = TernaryMatrix::packed_row_bytes(cols);
    let mut packed = vec![0u8; rows * rb];
    for r in 0..rows {
        TernaryMatrix::pack_row(&trits[r * cols..(r + 1) * cols], &mut packed[r * rb..(r + 1) * rb]);
    }
    packed
}

/// The batch kernel of `level`.
#[allow(clippy::too_many_arguments)]
fn gemv_batch_raw_at(level: Isa, w: &[u8], row_bytes: usize, n_rows: usize, xs: &[i8], ldx: usize, n_tok: usize, kc: usize, block: usize, raw: &mut [i32]) {
    match level {
        Isa::Scalar => scalar::Scalar::gemv_batch_raw(w, row_bytes, n_rows, xs, ldx, n_tok, kc, block, raw),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::Avx2::gemv_batch_raw(w, row_bytes, n_rows, xs, ldx, n_tok, kc, block, raw),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Amx => avx512::Avx512::gemv_batch_raw(w, row_bytes, n_rows, xs, ldx, n_tok, kc, block, raw),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!(),
    }
}

#[test]
fn token_passes_are_even_and_cover_every_token() {
    for n in 0..=40 {
        let mut passes = Vec::new();
        for_each_pass(n, |t0, nt| passes.push((t0, nt)));
        let mut next = 0;
        for &(t0, nt) in &passes {
            assert!(t0 == next && (1..=BATCH_PASS_TOKENS).contains(&nt), "{n}: {passes:?}");
            next += nt;
        }
        assert_eq!(next, n);
        assert_eq!(passes.len(), n.div_ceil(BATCH_PASS_TOKENS));
        let sizes: Vec<usize> = passes.iter().map(|p| p.1).collect();
        assert!(sizes.iter().max().unwrap_or(&0) - sizes.iter().min().unwrap_or(&0) <= 1, "{n}: {passes:?}");
    }
}

#[test]
fn gemm_matches_float_math_on_a_small_case() {
    let (rows, cols) = (3, 8);
    let trits: Vec<i8> = (0..rows * cols).map(|i| (i % 3) as i8 - 1).collect();
    let m = TernaryMatrix::from_parts(rows, cols, pack(&trits, rows, cols), cols, vec![0.5]).unwrap();
    let x: Vec<f32> = (0..2 * cols).map(|i| i as f32 - 4.0).collect();
    let mut acts = QuantActs::default();
    acts.quantize(ActFormat::PerToken, &x, cols);
    let mut out = vec![0f32; 2 * rows];
    m.gemm(&ThreadPool::new(2), &acts, &mut out);
    for t in 0..2 {
        for r in 0..rows {
            let want: f32 = (0..cols).map(|i| f32::from(trits[r * cols + i]) * 0.5 * f32::from(acts.q[t * cols + i]) / acts.inv[t]).sum();
            assert!((out[t * rows + r] - want).abs() < 1e-4);
        }
    }
}

#[test]
fn pack_unpack_round_trip_with_groups_and_tail() {
    let cols = 2 * GROUP + 12;
    let trits: Vec<i8> = (0..cols).map(|i| ((i * 5 + i / 7) % 3) as i8 - 1).collect();
    let m = TernaryMatrix::from_parts(1, cols, pack(&trits, 1, cols), 4, (0..cols / 4).map(|i| i as f32).collect()).unwrap();
    let mut back = vec![0i8; cols];
    m.unpack_row(0, &mut back);
    assert_eq!(back, trits);
}

#[test]
fn group_layout_puts_32_apart_trits_in_one_byte() {
    let mut trits = vec![0i8; GROUP];
    trits[5] = 1; // byte 5, shift 0 -> code 2
    trits[32 + 5] = -1; // byte 5, shift 2 -> code 0
    let mut out = vec![0u8; 32];
    TernaryMatrix::pack_row(&trits, &mut out);
    assert_eq!(out[5], 0b01_01_00_10);
    assert_eq!(out[6], 0b01_01_01_01);
}

#[test]
fn pack_group_copies_tq2_order_and_reverses_i2s_order() {
    let trits: Vec<i8> = (0..GROUP).map(|i| ((i * 7 + i / 9) % 3) as i8 - 1).collect();
    let mut want = vec![0u8; 32];
    TernaryMatrix::pack_row(&trits, &mut want);
    let i2s: Vec<u8> = (0..32).map(|j| (0..4).map(|s| ((trits[j + 32 * s] + 1) as u8) << (6 - 2 * s)).fold(0, |a, b| a | b)).collect();
    let mut out = vec![0u8; 32];
    TernaryMatrix::pack_group(&want, false, &mut out).unwrap();
    assert_eq!(out, want);
    TernaryMatrix::pack_group(&i2s, true, &mut out).unwrap();
    assert_eq!(out, want);
    let mut bad = want.clone();
    bad[3] |= 0b11 << 4;
    assert!(TernaryMatrix::pack_group(&bad, false, &mut out).is_err());
}

#[test]
fn every_five_trit_byte_decodes_to_its_digits() {
    for v in 0..243u16 {
        let digits: Vec<u8> = (0..5).map(|n| ((v / 3u16.pow(4 - n)) % 3) as u8).collect();
        let mut codes = vec![0u8; GROUP16];
        for (n, &d) in digits.iter().enumerate() {
            codes[32 * n] = d;
        }
        let mut out = vec![0u8; 32];
        pack_codes(TernaryLayout::Bits1_6, &codes, &mut out);
        let back: Vec<u8> = (0..5).map(|n| trit16(out[0], n)).collect();
        assert_eq!(back, digits, "value {v} stored as byte {}", out[0]);
    }
}

#[test]
fn relayout_round_trips_and_refuses_per_block_scales() {
    let (rows, cols) = (3, 2 * GROUP16 + 36);
    let trits: Vec<i8> = (0..rows * cols).map(|i| ((i * 7 + i / 11) % 3) as i8 - 1).collect();
    let pool = ThreadPool::new(2);
    let m = TernaryMatrix::from_parts(rows, cols, pack(&trits, rows, cols), cols, vec![0.5]).unwrap();
    let d = m.relayout(&pool, TernaryLayout::Bits1_6).unwrap();
    assert!(d.bytes() < m.bytes());
    let mut back = vec![0i8; cols];
    for r in 0..rows {
        d.unpack_row(r, &mut back);
        assert_eq!(back, trits[r * cols..(r + 1) * cols]);
    }
    let per_block = TernaryMatrix::from_parts(1, 256, pack(&trits[..256], 1, 256), 128, vec![1.0, 2.0]).unwrap();
    assert!(per_block.relayout(&pool, TernaryLayout::Bits1_6).is_none());
}

#[test]
fn bad_parts_are_rejected() {
    assert!(TernaryMatrix::from_parts(2, 6, vec![0; 4], 6, vec![1.0]).is_err());
    assert!(TernaryMatrix::from_parts(2, 8, vec![0; 3], 8, vec![1.0]).is_err());
    assert!(TernaryMatrix::from_parts(2, 8, vec![0; 4], 8, vec![f32::NAN]).is_err());
}

/// The int16 stages must not overflow at the worst magnitudes (every code 2, every value
/// -128), over more columns than one flush covers.
#[test]
fn raw_kernels_survive_extreme_values() {
    let (rows, kc) = (5, 4096 + 256);
    let codes = vec![2u8; rows * kc];
    let packed = vec![0b10_10_10_10u8; rows * kc / 4];
    let xs = vec![-128i8; 11 * kc];
    for level in Isa::available() {
        let mut raw = vec![0i32; rows];
        match level {
            Isa::Scalar => scalar::Scalar::gemv_raw(&packed, kc / 4, rows, kc, kc, &xs, &mut raw),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::Avx2::gemv_raw(&packed, kc / 4, rows, kc, kc, &xs, &mut raw),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Amx => avx512::Avx512::gemv_raw(&packed, kc / 4, rows, kc, kc, &xs, &mut raw),
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!(),
        }
        assert!(raw.iter().all(|&v| v == -256 * kc as i32), "{level:?} gemv: {raw:?}");
        let mut raw = vec![0i32; rows * 4];
        match level {
            Isa::Scalar => scalar::Scalar::gemm_raw(&codes, kc, rows, &xs, kc, 4, kc, kc, &mut raw),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::Avx2::gemm_raw(&codes, kc, rows, &xs, kc, 4, kc, kc, &mut raw),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Amx => avx512::Avx512::gemm_raw(&codes, kc, rows, &xs, kc, 4, kc, kc, &mut raw),
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!(),
        }
        assert!(raw.iter().all(|&v| v == -256 * kc as i32), "{level:?} gemm: {raw:?}");
        // Straight from the packed rows (the 2x4 assembly tile and the ragged-row tile).
        let mut raw = vec![0i32; rows * 4];
        match level {
            Isa::Scalar => scalar::Scalar::gemm_packed_raw(&packed, kc / 4, rows, &xs, kc, 4, kc, kc, &mut raw),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::Avx2::gemm_packed_raw(&packed, kc / 4, rows, &xs, kc, 4, kc, kc, &mut raw),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Amx => avx512::Avx512::gemm_packed_raw(&packed, kc / 4, rows, &xs, kc, 4, kc, kc, &mut raw),
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!(),
        }
        assert!(raw.iter().all(|&v| v == -256 * kc as i32), "{level:?} packed gemm: {raw:?}");
        // Short batches (two passes of the token registers).
        let mut raw = vec![0i32; rows * 11];
        gemv_batch_raw_at(level, &packed, kc / 4, rows, &xs, kc, 11, kc, kc, &mut raw);
        assert!(raw.iter().all(|&v| v == -256 * kc as i32), "{level:?} batch: {raw:?}");
        // 1.6-bit: byte 255 holds five 2s.
        let kc16 = 30 * GROUP16;
        let dense = vec![255u8; rows * kc16 / 5];
        let mut raw = vec![0i32; rows];
        match level {
            Isa::Scalar => scalar::Scalar::gemv16_raw(&dense, kc16 / 5, rows, kc16, &xs, &mut raw),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::Avx2::gemv16_raw(&dense, kc16 / 5, rows, kc16, &xs, &mut raw),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Amx => avx512::Avx512::gemv16_raw(&dense, kc16 / 5, rows, kc16, &xs, &mut raw),
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!(),
        }
        assert!(raw.iter().all(|&v| v == -256 * kc16 as i32), "{level:?} gemv16: {raw:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    /// Every ISA level gives bit-identical outputs to the scalar level, which equals the
    /// definition `Σ_b scale[r,b] · Σ_{i∈b} t·q / s`; shapes cover ragged column tails, row
    /// counts that do not fill a tile, decode (n = 1), short-batch (n ≤ 16) and prefill token
    /// counts, a shared scale, group-aligned per-block scales and unaligned ones.
    #[test]
    fn every_level_matches_the_definition(
        rows in 1usize..21,
        groups in 0usize..7,
        tail in 0usize..32,
        scales_kind in 0u8..3,
        unaligned_block in prop::sample::select(vec![4usize, 8, 32]),
        aligned_block in prop::sample::select(vec![128usize, 256]),
        // Decode, short batches and (past BATCH_MAX_TOKENS) the prefill tiles.
        n in prop_oneof![1usize..21, BATCH_MAX_TOKENS - 3..BATCH_MAX_TOKENS + 5],
        seed in any::<u64>(),
    ) {
        let mut next = xorshift(seed);
        // 0: shared scale (ragged tail allowed); 1: per-block, group aligned; 2: unaligned.
        let (cols, block_len) = match scales_kind {
            0 => ((groups * GROUP + tail * 4).max(4), 0),
            1 => ((groups.max(1) * GROUP).div_ceil(aligned_block) * aligned_block, aligned_block),
            _ => (((groups * GROUP + tail * 4) / unaligned_block).max(1) * unaligned_block, unaligned_block),
        };
        let block_len = if block_len == 0 { cols } else { block_len };
        let blocks = cols / block_len;
        let trits: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
        let scales: Vec<f32> = if scales_kind == 0 { vec![0.37] } else { (0..rows * blocks).map(|_| (next() % 1000) as f32 / 997.0 + 0.01).collect() };
        let m = TernaryMatrix::from_parts(rows, cols, pack(&trits, rows, cols), block_len, scales.clone()).unwrap();
        let x: Vec<f32> = (0..n * cols).map(|_| (next() % 2001) as f32 / 100.0 - 10.0).collect();
        let mut acts = QuantActs::default();
        acts.quantize(ActFormat::PerToken, &x, cols);
        let pool = ThreadPool::new(2);
        let mut reference = vec![0f32; n * rows];
        m.gemm_at(Isa::Scalar, &pool, &acts, &mut reference);
        for t in 0..n {
            for r in 0..rows {
                let mut want = 0f64;
                for b in 0..blocks {
                    let s = if scales.len() == 1 { scales[0] } else { scales[r * blocks + b] };
                    let isum: i64 = (b * block_len..(b + 1) * block_len)
                        .map(|i| i64::from(trits[r * cols + i]) * i64::from(acts.q[t * cols + i]))
                        .sum();
                    want += isum as f64 * f64::from(s);
                }
                want /= f64::from(acts.inv[t]);
                let got = f64::from(reference[t * rows + r]);
                prop_assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "t{t} r{r}: {got} vs {want}");
            }
        }
        let dense = m.relayout(&pool, TernaryLayout::Bits1_6);
        prop_assert_eq!(dense.is_some(), scales.len() == 1);
        for level in Isa::available() {
            let mut out = vec![0f32; n * rows];
            m.gemm_at(level, &pool, &acts, &mut out);
            prop_assert_eq!(&out, &reference, "{:?} differs from scalar", level);
            if let Some(d) = &dense {
                d.gemm_at(level, &pool, &acts, &mut out);
                prop_assert_eq!(&out, &reference, "{:?} differs from scalar in the 1.6-bit layout", level);
            }
        }
    }

    /// The batch kernel of every level gives bit for bit the scalar reference's sums, which
    /// are decode's (the scalar `gemv_raw`) token by token: random rows, groups, scale blocks,
    /// token counts across several register passes, and token strides wider than a row.
    #[test]
    fn batch_kernels_match_decode_sums(
        rows in 1usize..7,
        blocks in 1usize..4,
        gpb in 1usize..20,
        n_tok in 1usize..21,
        pad in 0usize..3,
        seed in any::<u64>(),
    ) {
        let mut next = xorshift(seed);
        let (block, kc) = (gpb * GROUP, blocks * gpb * GROUP);
        // A ragged tail after the groups, which the kernels must leave alone.
        let row_bytes = kc / 4 + 4 * pad;
        let w: Vec<u8> = (0..rows * row_bytes).map(|_| [0b00u8, 0b01, 0b10][(next() % 3) as usize] | [0u8, 4, 8][(next() % 3) as usize] | [0u8, 16, 32][(next() % 3) as usize] | [0u8, 64, 128][(next() % 3) as usize]).collect();
        let ldx = kc + 64 * pad;
        let xs: Vec<i8> = (0..n_tok * ldx).map(|_| next() as i8).collect();
        let nb = kc / block;
        let mut want = vec![0i32; n_tok * rows * nb];
        let mut one = vec![0i32; rows * nb];
        for t in 0..n_tok {
            scalar::Scalar::gemv_raw(&w, row_bytes, rows, kc, block, &xs[t * ldx..], &mut one);
            want[t * rows * nb..(t + 1) * rows * nb].copy_from_slice(&one);
        }
        for level in Isa::available() {
            let mut raw = vec![0i32; n_tok * rows * nb];
            gemv_batch_raw_at(level, &w, row_bytes, rows, &xs, ldx, n_tok, kc, block, &mut raw);
            prop_assert_eq!(&raw, &want, "{:?}", level);
        }
    }

    /// A token's outputs do not depend on the batch it is computed in: each of `k` tokens
    /// (decode, short batches and prefill tiles) computed alone and within the batch,
    /// at every level, in both layouts, with shared, per-block and unaligned scales, must agree
    /// bit for bit (lossless speculative decoding and continuous batching rely on it).
    #[test]
    fn a_tokens_outputs_do_not_depend_on_its_batch(
        rows in 1usize..40,
        groups in 0usize..25,
        // Half the shapes without a ragged tail: one shared scale then takes the fast path.
        tail in prop_oneof![Just(0usize), 0usize..32],
        scales_kind in 0u8..3,
        // 1 to 20 (decode and short batches), sometimes across BATCH_MAX_TOKENS into the tiles.
        k in prop_oneof![4 => 1usize..21, 1 => BATCH_MAX_TOKENS - 3..BATCH_MAX_TOKENS + 5],
        seed in any::<u64>(),
    ) {
        let mut next = xorshift(seed);
        let (cols, block_len) = match scales_kind {
            0 => ((groups * GROUP + tail * 4).max(4), 0),
            1 => (groups.max(1).next_multiple_of(2) * GROUP, 2 * GROUP),
            _ => (((groups * GROUP + tail * 4) / 32).max(1) * 32, 32),
        };
        let block_len = if block_len == 0 { cols } else { block_len };
        let trits: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
        let scales: Vec<f32> = if scales_kind == 0 { vec![0.37] } else { (0..rows * cols / block_len).map(|_| (next() % 1000) as f32 / 997.0 + 0.01).collect() };
        let m = TernaryMatrix::from_parts(rows, cols, pack(&trits, rows, cols), block_len, scales).unwrap();
        let x: Vec<f32> = (0..k * cols).map(|_| (next() % 2001) as f32 / 100.0 - 10.0).collect();
        let mut acts = QuantActs::default();
        acts.quantize(ActFormat::PerToken, &x, cols);
        let pool = ThreadPool::new(2);
        let mut layouts = vec![m.clone()];
        layouts.extend(m.relayout(&pool, TernaryLayout::Bits1_6));
        for level in Isa::available() {
            for m in &layouts {
                let mut batch = vec![0f32; k * rows];
                m.gemm_at(level, &pool, &acts, &mut batch);
                for t in 0..k {
                    let mut alone = QuantActs::default();
                    alone.quantize(ActFormat::PerToken, &x[t * cols..(t + 1) * cols], cols);
                    let mut out = vec![0f32; rows];
                    m.gemm_at(level, &pool, &alone, &mut out);
                    let same = out.iter().zip(&batch[t * rows..(t + 1) * rows]).all(|(a, b)| a.to_bits() == b.to_bits());
                    prop_assert!(same, "{:?} {:?}, token {} of {}: {:?} alone, {:?} in the batch", level, m.layout(), t, k, out, &batch[t * rows..(t + 1) * rows]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// The AMX prefill path (tiles and their fused epilogue) gives the scalar level's outputs
    /// bit for bit: 1 to 70 rows (whole and partial 32-row tasks), prefill token counts with
    /// ragged and odd token tiles, one shared scale (with and without a ragged column tail),
    /// per-block scales over 128 or 256 columns, and rows of 1 to 4 or 16 to 40 chunks.
    /// Runs only where the AMX level is available (elsewhere nothing calls the kernel).
    #[test]
    fn amx_prefill_equals_the_scalar_level(
        rows in 1usize..71,
        n_tok in BATCH_MAX_TOKENS + 1..BATCH_MAX_TOKENS + 40,
        chunks in prop_oneof![1usize..5, 16usize..41],
        tail in prop_oneof![Just(0usize), 1usize..16],
        per_block in prop::sample::select(vec![0usize, 128, 256]),
        seed in any::<u64>(),
    ) {
        if Isa::detect() < Isa::Amx {
            return Ok(());
        }
        let mut next = xorshift(seed);
        let (cols, block_len) = match per_block {
            0 => (chunks * 64 + tail * 4, 0),
            b => ((chunks * 64).next_multiple_of(b), b),
        };
        let block_len = if block_len == 0 { cols } else { block_len };
        let trits: Vec<i8> = (0..rows * cols).map(|_| (next() % 3) as i8 - 1).collect();
        let scales: Vec<f32> = if per_block == 0 { vec![-0.37] } else { (0..rows * cols / block_len).map(|_| (next() % 1000) as f32 / 497.0 - 1.0).collect() };
        let m = TernaryMatrix::from_parts(rows, cols, pack(&trits, rows, cols), block_len, scales).unwrap();
        let x: Vec<f32> = (0..n_tok * cols).map(|i| if i % 89 == 0 { 0.0 } else { (next() % 2001) as f32 / 100.0 - 10.0 }).collect();
        let mut acts = QuantActs::default();
        acts.quantize(ActFormat::PerToken, &x, cols);
        let pool = ThreadPool::new(2);
        let mut want = vec![0f32; n_tok * rows];
        m.gemm_at(Isa::Scalar, &pool, &acts, &mut want);
        let mut got = vec![0f32; n_tok * rows];
        m.gemm_at(Isa::Amx, &pool, &acts, &mut got);
        let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
        prop_assert!(same, "amx {:?} against scalar {:?}", got, want);
    }
}

/// Where AMX is usable, the AVX-512 VNNI prefill tiles it replaces still match the scalar
/// ones (the matrix-level tests take the AMX path there).
#[cfg(target_arch = "x86_64")]
#[test]
fn vnni_prefill_tiles_still_match_where_amx_takes_over() {
    if Isa::detect() < Isa::Avx512 {
        return;
    }
    let mut next = xorshift(7);
    let (n_rows, n_tok, kc, block) = (16, 37, 512, 128);
    let codes: Vec<u8> = (0..n_rows * kc).map(|_| (next() % 3) as u8).collect();
    let xs: Vec<i8> = (0..n_tok * kc).map(|_| next() as i8).collect();
    let mut want = vec![0i32; n_rows * n_tok * kc / block];
    scalar::Scalar::gemm_raw(&codes, kc, n_rows, &xs, kc, n_tok, kc, block, &mut want);
    let mut got = vec![0i32; want.len()];
    avx512::Avx512::gemm_raw(&codes, kc, n_rows, &xs, kc, n_tok, kc, block, &mut got);
    assert_eq!(got, want);
}
