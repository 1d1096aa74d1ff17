//! Serves local folders with the Hugging Face Hub's URL layout on 127.0.0.1, to try `ternlm
//! pull` without the internet:
//!
//! ```text
//! cargo run --release -p ternlm-hub --example fake_hub -- ORG/NAME=DIR... [--drop FILE] [--corrupt FILE]
//! HF_ENDPOINT=http://127.0.0.1:PORT ternlm pull hf:ORG/NAME
//! ```
//! `--drop FILE` cuts FILE's first download off halfway (the client must resume);
//! `--corrupt FILE` serves FILE with one byte flipped (the client must reject it).

use std::path::Path;

use ternlm_hub::fake_hub::{FakeFile, FakeHub, FakeRepo};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut repos, mut drops, mut corrupt) = (Vec::new(), Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--drop" => drops.push(it.next().ok_or("--drop needs a file")?.clone()),
            "--corrupt" => corrupt.push(it.next().ok_or("--corrupt needs a file")?.clone()),
            spec => {
                let (name, dir) = spec.split_once('=').ok_or("usage: fake_hub ORG/NAME=DIR... [--drop FILE] [--corrupt FILE]")?;
                let mut files = Vec::new();
                for e in std::fs::read_dir(Path::new(dir))? {
                    let p = e?.path();
                    if p.is_file() {
                        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        files.push(FakeFile::new(&name, std::fs::read(&p)?));
                    }
                }
                // A stable made-up commit id: a hash of the names and sizes.
                let mut h = std::collections::hash_map::DefaultHasher::new();
                for f in &files {
                    std::hash::Hash::hash(&(&f.path, f.served.len()), &mut h);
                }
                let commit = format!("{:016x}{:024x}", std::hash::Hasher::finish(&h), 0);
                repos.push(FakeRepo { name: name.to_string(), commit, files, token: None });
            }
        }
    }
    for r in &mut repos {
        for f in &mut r.files {
            if corrupt.contains(&f.path) && !f.served.is_empty() {
                let mid = f.served.len() / 2;
                f.served[mid] ^= 0xFF;
            }
        }
    }
    let hub = FakeHub::start(repos, drops)?;
    println!("{}", hub.url);
    loop {
        std::thread::park();
    }
}
