//! The `ternlm` binary: parses the command line and hands each subcommand to its module.
//! Every failure ends as one line on stderr and a non-zero exit status, never a panic
//! message or a backtrace.

mod cli;
mod commands;
mod load;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info.payload().downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| info.payload().downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into());
        eprintln!("ternlm: internal error: {msg} (please report this)");
    }));
    let cli = cli::Cli::parse();
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let mut line = chain.first().cloned().unwrap_or_default();
            for cause in chain.iter().skip(1) {
                if !line.contains(cause.as_str()) {
                    line.push_str(": ");
                    line.push_str(cause);
                }
            }
            eprintln!("ternlm: error: {line}");
            ExitCode::FAILURE
        }
    }
}
