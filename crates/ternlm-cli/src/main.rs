//! The `ternlm` binary: parses the command line and hands each subcommand to its module.
//! Every failure ends as one line on stderr and a non-zero exit status, never a panic
//! message or a backtrace; a closed stdout ends the program quietly (see `out`).

mod civil_date;
mod cli;
mod commands;
mod load;
mod out;

use std::process::ExitCode;

use out::note;

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info.payload().downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| info.payload().downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into());
        note!("ternlm: internal error: {msg} (please report this)");
    }));
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) if out::is_stdout_closed(&e) => ExitCode::from(out::SIGPIPE_STATUS),
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let mut line = chain.first().cloned().unwrap_or_default();
            for cause in chain.iter().skip(1) {
                if !line.contains(cause.as_str()) {
                    line.push_str(": ");
                    line.push_str(cause);
                }
            }
            note!("ternlm: error: {line}");
            ExitCode::FAILURE
        }
    }
}
