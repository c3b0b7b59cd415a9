//! The `fedq` command: one binary for every role (keys, envelopes, and later server and node).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = fedq::cli::Cli::parse();
    fedq::cli::init_tracing(cli.default_log_level());
    match fedq::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = err.exit_code();
            let mut shown = err.to_string();
            eprintln!("error: {shown}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                // Many messages already include their cause's text; print a cause only when it
                // adds something.
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                shown = text;
                source = cause.source();
            }
            ExitCode::from(code)
        }
    }
}
