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
            // MPI (--distributed) outlives the error line, dropped (finalised) when this arm
            // returns: finalising is collective, so every rank has printed its line before any
            // exits (mpirun kills the others at the first non-zero status).
            let mpi = match args.distributed.start() {
                Ok(mpi) => mpi,
                Err(e) => return cli::exit::report(Err(e)),
            };
            return cli::exit::report(cli::train(args, &given, &mpi));
        }
        Command::Devices(args) => cli::devices(args),
        Command::Bench(args) => cli::bench(args),
        Command::Check(args) => cli::check(args),
        Command::Sweep(args) => cli::sweep(args),
        Command::Eval(args) => cli::eval(args),
        Command::Predict(args) => cli::predict(args),
        Command::Shaders(args) => cli::shaders(args),
    };
    cli::exit::report(result)
}
