use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use perturb::cli::{self, Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match &cli.command {
        Command::Train(args) => {
            let sub = matches.subcommand_matches("train");
            // Which flags were typed (a resumed run takes the others from its checkpoint).
            let given = |id: &str| {
                sub.and_then(|m| m.try_get_raw(id).ok().flatten().map(|_| m.value_source(id)))
                    .flatten()
                    == Some(ValueSource::CommandLine)
            };
            cli::train(args, &given)
        }
        Command::Devices(args) => cli::devices(args),
        Command::Bench(args) => cli::bench(args),
        Command::Check(args) => cli::check(args),
        Command::Sweep(args) => cli::sweep(args),
        Command::Eval(args) => cli::eval(args),
        Command::Predict(args) => cli::predict(args),
        Command::Shaders(args) => cli::shaders(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perturb: error: {}", cli::exit::message(&e));
            // One status per class of error (the table in `perturb::cli::exit`).
            match e.class() {
                // 128 + the signal that asked for the stop.
                perturb::ErrorClass::Interrupted => ExitCode::from(cli::interrupt::exit_status()),
                _ => ExitCode::from(cli::exit::exit_code(&e)),
            }
        }
    }
}
