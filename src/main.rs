use clap::Parser;
use perturb::cli::{self, Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Train(args) => cli::train(args),
        Command::Devices(args) => cli::devices(args),
        Command::Bench(args) => cli::bench(args),
        Command::Check(args) => cli::check(args),
        Command::Sweep(args) => cli::sweep(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perturb: error: {e}");
            // One status per class of error (the table on `perturb::Error`).
            ExitCode::from(e.exit_code())
        }
    }
}
