//! Fuzzes the GGUF reader: any bytes must parse or fail with an error, never panic or read
//! out of bounds; every tensor the parser accepts must dequantize its first row in bounds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ternlm_format::GgufView;
use ternlm_format::dequant::dequantize_row;

fuzz_target!(|data: &[u8]| {
    let Ok(view) = GgufView::parse(data) else { return };
    for t in view.tensors.iter().take(16) {
        let row_len = t.row_len();
        if row_len > 1 << 16 {
            continue;
        }
        let bytes = &data[t.offset as usize..(t.offset + t.size) as usize];
        let mut out = vec![0f32; row_len];
        let _ = dequantize_row(t.ty, bytes, row_len, t.n_elements() as usize, 0, &t.name, &mut out);
    }
});
