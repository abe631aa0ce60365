//! The `deltarec` command. Exit status: 0 on success, 1 when the run failed
//! (the message says why), 2 on a bad flag or flag value.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use deltarec::cli::{Cli, Command};
use deltarec::run::RunError;
use deltarec::spec::Spec;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return flag_error(&error),
    };
    match cli.command {
        Command::Specs => {
            let text: String = Spec::builtin()
                .iter()
                .map(|spec| format!("{:14} {}\n", spec.name(), spec.description()))
                .collect();
            print(&text);
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
                    print(&format!("{summary}\n"));
                    ExitCode::SUCCESS
                }
                Ok(None) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("deltarec: {error}");
                    match error {
                        RunError::Usage(_) => ExitCode::from(2),
                        _ => ExitCode::FAILURE,
                    }
                }
            }
        }
    }
}

/// Help and version go out as clap writes them; a bad flag or value gets one
/// line, and exit status 2.
fn flag_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            ExitCode::from(2)
        }
        _ => {
            let text = error.to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("deltarec: {first}; see deltarec --help (or deltarec run --help)");
            ExitCode::from(2)
        }
    }
}

/// Prints to stdout; a closed pipe (`deltarec specs | head -1`) is not an
/// error worth a message.
fn print(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
