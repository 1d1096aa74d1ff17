//! The rest of a transformer step on the device: residual adds, the gated FFN activations,
//! rotary embeddings, F16 KV-cache writes and causal attention over the cache (shaders
//! ops.wgsl and attention.wgsl), each recorded into a [`Recorder`] like the products.

use crate::device::{Gpu, Recorder};
use crate::kernels::GpuVec;
use crate::{GpuError, Result};

const OPS_WG: usize = 256;
const KV_WG: usize = 64;
/// Largest head size attention takes (its workgroup holds the query, 4 dimensions a lane).
pub const MAX_HEAD_DIM: usize = 256;

/// The gated FFN's activation: `g = act(g) * u`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateActivation {
    /// `silu(g) = g / (1 + exp(-g))`
    Silu,
    /// `relu(g)²`
    Relu2,
}

/// Which dimensions rotary embeddings pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopePairs {
    /// (2i, 2i + 1): llama.cpp's "NORM".
    Interleaved,
    /// (i, i + n_rot / 2): "NEOX".
    Neox,
}

/// F16 values on the device, two to a word: one layer's keys or values of one sequence.
pub struct GpuHalf {
    buf: wgpu::Buffer,
    len: usize,
}

impl GpuHalf {
    /// Values it holds room for.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Device bytes it takes.
    pub fn bytes(&self) -> u64 {
        self.buf.size()
    }
}

/// Shapes of one segment's attention: its `n_tokens` query rows start at row `row0` of `q`
/// (and of the output) and sit at positions `pos0..pos0 + n_tokens` of the cache.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub pos0: usize,
    pub n_tokens: usize,
    pub row0: usize,
}

pub(crate) struct OpsPipelines {
    add: wgpu::ComputePipeline,
    silu: wgpu::ComputePipeline,
    relu2: wgpu::ComputePipeline,
    rope: wgpu::ComputePipeline,
    kv_write: wgpu::ComputePipeline,
    attention: wgpu::ComputePipeline,
}

impl OpsPipelines {
    /// Compiles the shaders; the caller holds an error scope around this.
    /// With `native_fma`, rope's and attention's fused multiply-adds are the device's `fma()`.
    pub(crate) fn new(device: &wgpu::Device, native_fma: bool) -> Self {
        let module = |label: &str, src: &str| crate::device::shader(device, label, src);
        let pipeline = |m: &wgpu::ShaderModule, entry: &str| crate::device::pipeline(device, m, entry);
        let ops_src = format!("{}{}{}", include_str!("shaders/ops.wgsl"), include_str!("shaders/two_sum.wgsl"), crate::fma::source(native_fma));
        let ops = module("ops", &ops_src);
        let attn_src = format!(
            "{}{}{}{}{}",
            include_str!("shaders/attention.wgsl"),
            include_str!("shaders/f16.wgsl"),
            include_str!("shaders/two_sum.wgsl"),
            crate::fma::source(native_fma),
            include_str!("shaders/div.wgsl")
        );
        let attn = module("attention", &attn_src);
        OpsPipelines {
            add: pipeline(&ops, "add"),
            silu: pipeline(&ops, "gate_silu"),
            relu2: pipeline(&ops, "gate_relu2"),
            rope: pipeline(&ops, "rope"),
            kv_write: pipeline(&attn, "kv_write"),
            attention: pipeline(&attn, "attention"),
        }
    }
}

fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| GpuError::Shape(format!("{what} {v} is too large for 32-bit indexing")))
}

impl Gpu {
    /// `len` f32 values of device memory, contents unspecified until written.
    pub fn alloc(&self, len: usize) -> Result<GpuVec> {
        Ok(GpuVec::from_parts(self.storage("f32 vector", len as u64 * 4)?, len))
    }

    /// Room for `len` f16 values (`len` even), zeroed.
    pub fn alloc_half(&self, len: usize) -> Result<GpuHalf> {
        if !len.is_multiple_of(2) {
            return Err(GpuError::Shape(format!("an F16 buffer holds pairs of values, not {len}")));
        }
        Ok(GpuHalf { buf: self.storage("f16 cache", len as u64 * 2)?, len })
    }

    /// Reads `len` values of an F16 buffer back from `start` (`start` even), as f32.
    pub fn read_half(&self, h: &GpuHalf, start: usize, len: usize) -> Result<Vec<f32>> {
        if !start.is_multiple_of(2) || start + len > h.len {
            return Err(GpuError::Shape(format!("values {start}..{} of an F16 buffer of {}", start + len, h.len)));
        }
        let words = len.div_ceil(2);
        let mut enc_src = self.begin()?;
        let tmp = self.storage("f16 readback", words as u64 * 4)?;
        enc_src.copy(&h.buf, start as u64 * 2, &tmp, 0, words as u64 * 4);
        enc_src.submit()?;
        let bytes = self.read_bytes(&tmp, words as u64 * 4)?;
        let halves: Vec<u16> = bytemuck::pod_collect_to_vec(&bytes);
        Ok(halves.iter().take(len).map(|&b| f16_to_f32(b)).collect())
    }
}

/// IEEE half bits to f32 (exact), for reading caches back.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let e = u32::from((h >> 10) & 0x1f);
    let m = u32::from(h & 0x3ff);
    let bits = match e {
        0 => return f32::from_bits(((m as f32) * 5.960_464_5e-8).to_bits() | sign),
        31 => sign | 0x7f80_0000 | (m << 13),
        _ => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

impl Recorder<'_> {
    fn ops_params(&self, n: usize, extra: [u32; 5]) -> Result<(wgpu::Buffer, u32, u32)> {
        let (gx, gy) = self.gpu.grid(n, OPS_WG)?;
        let words = [u32_of("element count", n)?, gx, 0, extra[0], extra[1], extra[2], extra[3], extra[4]];
        Ok((self.gpu.uniform(&words), gx, gy))
    }

    /// Records `x += y`.
    pub fn add(&mut self, x: &GpuVec, y: &GpuVec) -> Result<()> {
        if x.len() != y.len() {
            return Err(GpuError::Shape(format!("adding {} values to {}", y.len(), x.len())));
        }
        let (params, gx, gy) = self.ops_params(x.len(), [0; 5])?;
        let gpu = self.gpu;
        let bg = gpu.bind_group(&gpu.ops.add, &[x.buffer(), y.buffer(), &params]);
        self.dispatch(&gpu.ops.add, vec![(bg, gx, gy, 1)]);
        Ok(())
    }

    /// Records `g = act(g) * u`, elementwise.
    pub fn gate(&mut self, g: &GpuVec, u: &GpuVec, act: GateActivation) -> Result<()> {
        if g.len() != u.len() {
            return Err(GpuError::Shape(format!("gating {} values with {}", g.len(), u.len())));
        }
        let (params, gx, gy) = self.ops_params(g.len(), [0; 5])?;
        let gpu = self.gpu;
        let pipeline = match act {
            GateActivation::Silu => &gpu.ops.silu,
            GateActivation::Relu2 => &gpu.ops.relu2,
        };
        let bg = gpu.bind_group(pipeline, &[g.buffer(), u.buffer(), &params]);
        self.dispatch(pipeline, vec![(bg, gx, gy, 1)]);
        Ok(())
    }

    /// Records rotary embeddings in place: `x` is `rows` rows of heads of `head_dim` values,
    /// `cs` holds per row `(cos, sin)` for each of `n_rot / 2` pairs, flattened
    /// (`ternlm_kernels::ops::rope_cache`'s values); dimensions past `n_rot` stay as they are.
    pub fn rope(&mut self, x: &GpuVec, cs: &GpuVec, rows: usize, head_dim: usize, pairs: RopePairs) -> Result<()> {
        if rows == 0 || head_dim == 0 || !x.len().is_multiple_of(rows) || !(x.len() / rows).is_multiple_of(head_dim) || !cs.len().is_multiple_of(2 * rows) {
            return Err(GpuError::Shape(format!("rope over {} values in {rows} rows of heads of {head_dim}, {} table values", x.len(), cs.len())));
        }
        let half = cs.len() / (2 * rows);
        if half == 0 || 2 * half > head_dim {
            return Err(GpuError::Shape(format!("rope rotates {} dimensions of heads of {head_dim}", 2 * half)));
        }
        let heads = x.len() / rows / head_dim;
        let n = rows * heads * half;
        let (params, gx, gy) = self.ops_params(n, [u32_of("head size", head_dim)?, half as u32, heads as u32, u32::from(pairs == RopePairs::Neox), 0])?;
        let gpu = self.gpu;
        let bg = gpu.bind_group(&gpu.ops.rope, &[x.buffer(), cs.buffer(), &params]);
        self.dispatch(&gpu.ops.rope, vec![(bg, gx, gy, 1)]);
        Ok(())
    }

    /// Records the F16 rounding of `count` values of `src` from `src_start` into `cache` from
    /// `dst_start` (all three even).
    pub fn kv_write(&mut self, src: &GpuVec, src_start: usize, cache: &GpuHalf, dst_start: usize, count: usize) -> Result<()> {
        if !(src_start.is_multiple_of(2) && dst_start.is_multiple_of(2) && count.is_multiple_of(2)) || src_start + count > src.len() || dst_start + count > cache.len {
            return Err(GpuError::Shape(format!("cache write of {count} values from {src_start} of {} to {dst_start} of {}", src.len(), cache.len)));
        }
        if count == 0 {
            return Ok(());
        }
        let (gx, gy) = self.gpu.grid(count / 2, KV_WG)?;
        let words = [0, 0, 0, 0, 0, 0, 0, 0, u32_of("cache offset", src_start)?, u32_of("cache offset", dst_start)?, u32_of("cache write", count)?, gx];
        let params = self.gpu.uniform(&words);
        let gpu = self.gpu;
        let layout = gpu.ops.kv_write.get_bind_group_layout(0);
        let entries = [
            wgpu::BindGroupEntry { binding: 4, resource: params.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 5, resource: src.buffer().as_entire_binding() },
            wgpu::BindGroupEntry { binding: 6, resource: cache.buf.as_entire_binding() },
        ];
        let bg = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &layout, entries: &entries });
        self.dispatch(&gpu.ops.kv_write, vec![(bg, gx, gy, 1)]);
        Ok(())
    }

    /// Records causal attention of one segment's query rows over its cache (`k`, `v`: rows
    /// of `n_kv_heads * head_dim` values, at least `pos0 + n_tokens` of them written), into
    /// the same rows of `out` (shaped like `q`).
    pub fn attention(&mut self, q: &GpuVec, k: &GpuHalf, v: &GpuHalf, out: &GpuVec, s: AttnShape) -> Result<()> {
        let AttnShape { n_heads, n_kv_heads, head_dim: hd, pos0, n_tokens, row0 } = s;
        if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) || hd == 0 || hd > MAX_HEAD_DIM || n_tokens == 0 {
            return Err(GpuError::Shape(format!("attention with {n_heads} heads over {n_kv_heads} KV heads of {hd} (at most {MAX_HEAD_DIM}), {n_tokens} tokens")));
        }
        let q_stride = n_heads * hd;
        let kv_stride = n_kv_heads * hd;
        let n_pos = pos0 + n_tokens;
        if (row0 + n_tokens) * q_stride > q.len() || q.len() != out.len() || n_pos * kv_stride > k.len || n_pos * kv_stride > v.len {
            return Err(GpuError::Shape(format!("attention rows {row0}..{} of {} values, {n_pos} positions of {kv_stride} in caches of {}", row0 + n_tokens, q.len(), k.len.min(v.len))));
        }
        let max = self.gpu.limits().max_compute_workgroups_per_dimension as usize;
        if n_heads > max || n_tokens > max {
            return Err(GpuError::Shape(format!("attention over {n_heads} heads and {n_tokens} tokens exceeds {max} workgroups a dimension")));
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let words = [
            u32_of("head group", n_heads / n_kv_heads)?,
            hd as u32,
            u32_of("cache row", kv_stride)?,
            u32_of("position", pos0)?,
            u32_of("row", row0)?,
            u32_of("row", q_stride)?,
            scale.to_bits(),
            0,
            0,
            0,
            0,
            0,
        ];
        let params = self.gpu.uniform(&words);
        let gpu = self.gpu;
        let bg = gpu.bind_group(&gpu.ops.attention, &[q.buffer(), &k.buf, &v.buf, out.buffer(), &params]);
        self.dispatch(&gpu.ops.attention, vec![(bg, n_heads as u32, n_tokens as u32, 1)]);
        Ok(())
    }

    /// Records a copy of the first `len` values (even) of `src` into `dst`.
    pub fn copy_half(&mut self, src: &GpuHalf, dst: &GpuHalf, len: usize) -> Result<()> {
        if !len.is_multiple_of(2) || len > src.len || len > dst.len {
            return Err(GpuError::Shape(format!("copying {len} f16 values between buffers of {} and {}", src.len, dst.len)));
        }
        self.copy(&src.buf, 0, &dst.buf, 0, len as u64 * 2);
        Ok(())
    }

    /// Records a copy of `rows` rows of `width` values from row `from` of `src` to row `to`
    /// of `dst`.
    pub fn copy_rows(&mut self, src: &GpuVec, from: usize, dst: &GpuVec, to: usize, rows: usize, width: usize) -> Result<()> {
        if (from + rows) * width > src.len() || (to + rows) * width > dst.len() {
            return Err(GpuError::Shape(format!("copying rows {from}..{} of {width} values into rows {to}..", from + rows)));
        }
        self.copy(src.buffer(), (from * width * 4) as u64, dst.buffer(), (to * width * 4) as u64, (rows * width * 4) as u64);
        Ok(())
    }

    /// Records an upload of `data` into `dst` from value `at` (done in order with the
    /// recorded work: the write lands before this submission runs).
    pub fn write(&mut self, dst: &GpuVec, at: usize, data: &[f32]) -> Result<()> {
        if at + data.len() > dst.len() {
            return Err(GpuError::Shape(format!("writing {} values at {at} of {}", data.len(), dst.len())));
        }
        if !data.is_empty() {
            self.gpu.queue.write_buffer(dst.buffer(), at as u64 * 4, bytemuck::cast_slice(data));
        }
        Ok(())
    }
}
