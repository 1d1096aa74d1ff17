// TEMPORARY measurement harness (not to be committed).
use std::time::Instant;
use ternlm::{LoadOptions, Logits, Model};

fn main() {
    let path = std::env::args().nth(1).unwrap();
    let ks: Vec<usize> = std::env::args().nth(2).unwrap_or("1,8".into()).split(',').map(|s| s.parse().unwrap()).collect();
    let reps: usize = std::env::args().nth(3).map(|s| s.parse().unwrap()).unwrap_or(20);
    let model = Model::load(&path, &LoadOptions { threads: 2, ternary_layout: Default::default(), int8_head: false }).unwrap();
    let vocab = model.config.n_vocab as u32;
    let context: Vec<u32> = (0..64u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let mut seq = model.new_sequence(64 + 17);
    seq.push(&context, Logits::None);
    model.step(&mut [&mut seq], None).unwrap();
    let mut samples = vec![Vec::new(); ks.len()];
    for rep in 0..=reps {
        for (i, &k) in ks.iter().enumerate() {
            let tokens: Vec<u32> = (0..k as u32).map(|j| (j * 104_729 + rep as u32) % vocab).collect();
            seq.push(&tokens, Logits::All);
            let t = Instant::now();
            model.step(&mut [&mut seq], None).unwrap();
            let ms = t.elapsed().as_secs_f64() * 1e3;
            seq.take_logits();
            seq.truncate(64);
            if rep > 0 {
                samples[i].push(ms);
            }
        }
    }
    let mut line = String::new();
    let base = {
        let mut s = samples[0].clone();
        s.sort_by(f64::total_cmp);
        s[s.len() / 4]
    };
    for (i, &k) in ks.iter().enumerate() {
        let mut s = samples[i].clone();
        s.sort_by(f64::total_cmp);
        let q1 = s[s.len() / 4];
        line += &format!("k{k}: min {:.1} q1 {:.1} med {:.1} (q1 x{:.2})  ", s[0], q1, s[s.len() / 2], q1 / base);
    }
    println!("{line}");
}
