//! What `ternlm report` reads off the machine: its description and ceilings ([`machine`]),
//! and its energy counters ([`energy`]).

pub mod energy;
pub mod machine;
