//! The `deltarec` command. Exit status: 0 on success, 1 when the run failed
//! (the message says why), 2 on a command-line error.

use std::process::ExitCode;

use clap::Parser;
use deltarec::cli::{Cli, Command};
use deltarec::spec::Spec;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Specs => {
            for spec in Spec::builtin() {
                println!("{:14} {}", spec.name(), spec.description());
            }
            ExitCode::SUCCESS
        }
        Command::Generate(flags) => {
            let (options, path) = match flags.validate() {
                Ok(checked) => checked,
                Err(error) => {
                    eprintln!("deltarec: {error}");
                    return ExitCode::from(2);
                }
            };
            match deltarec::generate::write_file(&options, &path) {
                Ok(stats) => {
                    println!("{}: {stats}", path.display());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("deltarec: writing {}: {error}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(flags) => {
            let config = match flags.validate() {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("deltarec: {error}");
                    return ExitCode::from(2);
                }
            };
            match deltarec::run::run(&config) {
                Ok(Some(summary)) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Ok(None) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("deltarec: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
