//! The shared fixture models parse, and their ternary tensors unpack to the weights the
//! generator wrote: TQ1_0 and TQ2_0 hold identical trits, and I2_S scales equal the recorded
//! per-tensor scales.

use std::path::PathBuf;

use ternlm_format::dequant::{dequantize_row, unpack_ternary_row};
use ternlm_format::{GgufFile, Metadata, TensorType};

fn fixtures() -> PathBuf {
    std::env::var_os("TERNLM_FIXTURES").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"))
}

fn scales(model_json: &str) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join(model_json)).expect("fixture model.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["generator_params"]["tensor_scales"].as_object().expect("scales").clone()
}

#[test]
fn tq1_0_and_tq2_0_unpack_to_the_same_trits() {
    let a = GgufFile::open(fixtures().join("tiny-bitnet/tiny-bitnet-tq1_0.gguf")).unwrap();
    let b = GgufFile::open(fixtures().join("tiny-bitnet/tiny-bitnet-tq2_0.gguf")).unwrap();
    assert_eq!(a.str_of("general.architecture").unwrap(), Some("bitnet"));
    let expected = scales("tiny-bitnet/model.json");
    let mut n_tensors = 0;
    for info in a.tensors.iter().filter(|t| t.ty == TensorType::TQ1_0) {
        let (ib, db) = b.tensor(&info.name).unwrap();
        assert_eq!(ib.ty, TensorType::TQ2_0);
        assert_eq!(ib.dims, info.dims);
        let want = expected[&info.name].as_f64().unwrap() as f32;
        let (k, n) = (info.row_len(), info.n_elements() as usize);
        let (mut ta, mut tb) = (vec![0i8; k], vec![0i8; k]);
        for row in 0..info.n_rows() {
            let sa = unpack_ternary_row(info.ty, a.data(info), k, n, row, &info.name, &mut ta).unwrap();
            let sb = unpack_ternary_row(ib.ty, db, k, n, row, &info.name, &mut tb).unwrap();
            assert_eq!(ta, tb, "{} row {row}", info.name);
            assert_eq!(sa, sb);
            assert!(sa.scales.iter().all(|&s| s == want), "{}: {:?} vs {want}", info.name, sa.scales);
        }
        n_tensors += 1;
    }
    assert_eq!(n_tensors, 28);
}

#[test]
fn i2s_scales_match_the_generator() {
    let f = GgufFile::open(fixtures().join("tiny-bitnet-b158/tiny-bitnet-b158-i2_s.gguf")).unwrap();
    assert_eq!(f.str_of("general.architecture").unwrap(), Some("bitnet-25"));
    let expected = scales("tiny-bitnet-b158/model.json");
    let mut n = 0;
    for info in f.tensors.iter().filter(|t| t.ty == TensorType::I2S) {
        let k = info.row_len();
        let mut row = vec![0f32; k];
        dequantize_row(info.ty, f.data(info), k, info.n_elements() as usize, 0, &info.name, &mut row).unwrap();
        let want = expected[&info.name].as_f64().unwrap() as f32;
        assert!(row.iter().all(|&x| x == 0.0 || x.abs() == want), "{}", info.name);
        let nonzero = row.iter().filter(|&&x| x != 0.0).count();
        assert!(nonzero > k / 2 && nonzero < k, "{}: trits look uniform ({nonzero}/{k} nonzero)", info.name);
        n += 1;
    }
    assert_eq!(n, 28);
}
