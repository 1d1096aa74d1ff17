//! The reference ternary kernels: plain loops over the packed layout and over unpacked codes.
//! Every SIMD level must produce exactly these integer sums.

use super::{GROUP, GROUP16, Kernels, trit16};

pub(crate) struct Scalar;

/// `Σ code·x` over a ragged tail stored 4 codes per byte in order.
pub(crate) fn tail_dot(bytes: &[u8], x: &[i8]) -> i32 {
    x.iter().enumerate().map(|(k, &q)| i32::from((bytes[k / 4] >> (2 * (k % 4))) & 3) * i32::from(q)).sum()
}

impl Kernels for Scalar {
    fn gemv_raw(w: &[u8], row_bytes: usize, n_rows: usize, kc: usize, block: usize, x: &[i8], raw: &mut [i32]) {
        let nb = kc / block;
        for r in 0..n_rows {
            let row = &w[r * row_bytes..];
            for b in 0..nb {
                let mut sum = 0i32;
                for g in b * block / GROUP..(b + 1) * block / GROUP {
                    let bytes = &row[g * 32..g * 32 + 32];
                    let xg = &x[g * GROUP..(g + 1) * GROUP];
                    for (j, &byte) in bytes.iter().enumerate() {
                        for s in 0..4 {
                            sum += i32::from((byte >> (2 * s)) & 3) * i32::from(xg[32 * s + j]);
                        }
                    }
                }
                raw[r * nb + b] = sum;
            }
        }
    }

    fn gemv_batch_raw(w: &[u8], row_bytes: usize, n_rows: usize, xs: &[i8], ldx: usize, n_tok: usize, kc: usize, block: usize, raw: &mut [i32]) {
        let nb = kc / block;
        for r in 0..n_rows {
            let row = &w[r * row_bytes..];
            for b in 0..nb {
                let mut sums = [0i32; super::BATCH_PASS_TOKENS];
                super::for_each_pass(n_tok, |t0, nt| {
                    let sums = &mut sums[..nt];
                    sums.fill(0);
                    for g in b * block / GROUP..(b + 1) * block / GROUP {
                        for (j, &byte) in row[g * 32..g * 32 + 32].iter().enumerate() {
                            for s in 0..4 {
                                // Each code is unpacked once and meets every token of the pass.
                                let code = i32::from((byte >> (2 * s)) & 3);
                                for (t, sum) in sums.iter_mut().enumerate() {
                                    *sum += code * i32::from(xs[(t0 + t) * ldx + g * GROUP + 32 * s + j]);
                                }
                            }
                        }
                    }
                    for (t, &sum) in sums.iter().enumerate() {
                        raw[((t0 + t) * n_rows + r) * nb + b] = sum;
                    }
                });
            }
        }
    }

    fn gemv16_raw(w: &[u8], row_bytes: usize, n_rows: usize, kc16: usize, x: &[i8], raw: &mut [i32]) {
        for (r, out) in raw.iter_mut().enumerate().take(n_rows) {
            let row = &w[r * row_bytes..];
            let mut sum = 0i32;
            for g in 0..kc16 / GROUP16 {
                for (j, &b) in row[g * 32..g * 32 + 32].iter().enumerate() {
                    for n in 0..5 {
                        sum += i32::from(trit16(b, n)) * i32::from(x[g * GROUP16 + 32 * n + j]);
                    }
                }
            }
            *out = sum;
        }
    }

    fn gemm_raw(codes: &[u8], ld: usize, n_rows: usize, xs: &[i8], ldx: usize, n_tok: usize, kc: usize, block: usize, raw: &mut [i32]) {
        let nb = kc / block;
        for t in 0..n_tok {
            let x = &xs[t * ldx..];
            for r in 0..n_rows {
                let c = &codes[r * ld..];
                for b in 0..nb {
                    let range = b * block..(b + 1) * block;
                    raw[(t * n_rows + r) * nb + b] = c[range.clone()].iter().zip(&x[range]).map(|(&c, &q)| i32::from(c) * i32::from(q)).sum();
                }
            }
        }
    }
}
