//! Command-line flags, parsed by clap into raw values, then checked into a
//! [`RunConfig`] before any file is opened or any dataflow is built.
//!
//! timely's own cluster flags (`-w`, `-n`, `-p`, `-h`) are part of `run`, so
//! `-h` names a hostfile, as in every timely program; help is `--help`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::model::{OptimizerConfig, OptimizerKind};
use crate::scaler::ScalerKind;

/// The most worker threads one process may start.
pub const MAX_WORKERS: usize = 256;

/// Milliseconds in one day: the default epoch.
pub const DAY_MS: i64 = 86_400_000;

/// deltarec: exact, incremental features, examples and a purchase-propensity
/// model from e-commerce event logs.
#[derive(Debug, Parser)]
#[command(name = "deltarec", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay event logs: clean, aggregate, build leak-free examples, train.
    #[command(disable_help_flag = true, allow_negative_numbers = true)]
    Run(Box<RunFlags>),
    /// List the built-in dataflow specs (input formats).
    Specs,
    /// Write a synthetic event log shaped like the real ones, for benchmarks.
    Generate(crate::generate::GenerateFlags),
}

/// The raw flags of `deltarec run`.
#[derive(Debug, Args)]
pub struct RunFlags {
    /// Dataflow spec: a built-in name (retailrocket, rees46, taobao) or a
    /// TOML file. Default: detected from the first input file's first line.
    #[arg(long, value_name = "NAME|FILE")]
    pub spec: Option<String>,

    /// Event log file, or directory (all its files, in name order). Repeat
    /// for several. Default: the embedded real Taobao sample.
    #[arg(long = "events", value_name = "PATH")]
    pub events: Vec<PathBuf>,

    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR", default_value = "deltarec-out")]
    pub out: PathBuf,

    /// Epoch width: 1d, 1h, 15m, 30s, or a number of milliseconds.
    #[arg(long, value_name = "DURATION", default_value = "1d")]
    pub bucket: String,

    /// How many epochs a row may arrive behind the newest one its reader has
    /// seen; an older row is rejected as `late`. Default: unlimited (exact
    /// for any row order; no epoch closes before the input ends).
    #[arg(long, value_name = "EPOCHS")]
    pub lateness: Option<u64>,

    /// A user with more than N de-duplicated events in one epoch is a bot for
    /// that epoch; 0 turns the rule off.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub bot_threshold: u64,

    /// Also write examples.csv (every example, with its raw features).
    #[arg(long)]
    pub emit_examples: bool,

    /// Also write features/ (user, item and pair aggregates at the end).
    #[arg(long)]
    pub emit_features: bool,

    /// Feature scaling: zscore or minmax.
    #[arg(long, value_name = "KIND", default_value = "zscore")]
    pub scaler: String,

    /// Optimizer: sgd, adagrad or adam.
    #[arg(long, value_name = "KIND", default_value = "adagrad")]
    pub optimizer: String,

    /// Learning rate (> 0).
    #[arg(long, value_name = "RATE", default_value_t = 0.1)]
    pub lr: f64,

    /// L2 penalty on the weights (>= 0).
    #[arg(long, value_name = "PENALTY", default_value_t = 1e-6)]
    pub l2: f64,

    /// L1 penalty on the weights, as a proximal step (>= 0).
    #[arg(long, value_name = "PENALTY", default_value_t = 0.0)]
    pub l1: f64,

    /// Examples per mini-batch, on average (>= 1): an epoch of n examples has
    /// ceil(n / N) batches, and a hash of epoch, user and item picks each
    /// example's batch, so the batches do not depend on the workers.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub batch_size: usize,

    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", value_name = "N", default_value_t = 1)]
    pub workers: usize,

    /// Number of processes in the cluster.
    #[arg(short = 'n', long = "processes", value_name = "N", default_value_t = 1)]
    pub processes: usize,

    /// This process's index in the cluster, 0-based.
    #[arg(short = 'p', long = "process", value_name = "I", default_value_t = 0)]
    pub process: usize,

    /// Cluster hostfile: one host:port per line, one line per process.
    /// Default: 127.0.0.1 ports 2101 and up.
    #[arg(short = 'h', long = "hostfile", value_name = "FILE")]
    pub hostfile: Option<PathBuf>,

    /// State directory: resume from the state saved there, if any, and save
    /// the state there at the end, so that a later run with the next log
    /// continues exactly.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,

    /// Replay an input file the state has already consumed.
    #[arg(long)]
    pub force: bool,

    /// Also save a checkpoint in the --state directory after every K epochs
    /// trained, so that a run that is killed goes on from there when rerun
    /// with the same arguments. Epochs close as the input is read only with
    /// a bounded --lateness; otherwise they close, and checkpoints are
    /// taken, after the whole input is read.
    #[arg(long, value_name = "K")]
    pub checkpoint_every: Option<u64>,

    /// Cluster mode: seconds to wait for every peer to connect (> 0).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub connect_timeout: u64,

    /// No progress lines (the final summary still prints).
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
}

/// A checked run configuration.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// As `--spec`.
    pub spec: Option<String>,
    /// As `--events`; empty for the embedded sample.
    pub events: Vec<PathBuf>,
    /// As `--out`.
    pub out: PathBuf,
    /// Epoch width in milliseconds (> 0).
    pub bucket_ms: i64,
    /// As `--lateness`.
    pub lateness: Option<u64>,
    /// As `--bot-threshold`.
    pub bot_threshold: u64,
    /// As `--emit-examples`.
    pub emit_examples: bool,
    /// As `--emit-features`.
    pub emit_features: bool,
    /// As `--scaler`.
    pub scaler: ScalerKind,
    /// Optimizer, rates and batch size.
    pub optimizer: OptimizerConfig,
    /// Worker threads per process (>= 1).
    pub workers: usize,
    /// Processes (>= 1).
    pub processes: usize,
    /// This process (< processes).
    pub process: usize,
    /// Process addresses, one per process, when `processes > 1`.
    pub addresses: Vec<String>,
    /// As `--state`.
    pub state: Option<PathBuf>,
    /// As `--force`.
    pub force: bool,
    /// As `--checkpoint-every`.
    pub checkpoint_every: Option<u64>,
    /// How long the connection phase of cluster mode may take (> 0).
    pub connect_timeout: std::time::Duration,
    /// Whether to print progress.
    pub progress: bool,
}

impl RunFlags {
    /// Checks the flags; the error is one line naming the flag and the fix.
    ///
    /// # Errors
    /// On any value out of range or unparseable, or an unreadable hostfile.
    pub fn validate(self) -> Result<RunConfig, String> {
        let bucket_ms = parse_duration(&self.bucket).ok_or_else(|| {
            format!(
                "--bucket {:?}: expected a positive duration like 1d, 1h, 15m, 30s or a \
                 number of milliseconds",
                self.bucket
            )
        })?;
        let scaler: ScalerKind = self
            .scaler
            .parse()
            .map_err(|err| format!("--scaler: {err}"))?;
        let kind: OptimizerKind = self
            .optimizer
            .parse()
            .map_err(|err| format!("--optimizer: {err}"))?;
        let optimizer = OptimizerConfig {
            kind,
            lr: self.lr,
            l2: self.l2,
            l1: self.l1,
            batch_size: self.batch_size,
        };
        optimizer.validate().map_err(|err| {
            format!(
                "--{}",
                err.to_string()
                    .replace("optimizer option ", "")
                    .replace('_', "-")
            )
        })?;
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return Err(format!(
                "-w {}: worker threads per process run from 1 to {MAX_WORKERS}; use about one \
                 per core",
                self.workers
            ));
        }
        if self.processes == 0 {
            return Err("-n 0: a run needs at least one process; use -n 1 or more".into());
        }
        if self.process >= self.processes {
            return Err(format!(
                "-p {}: process indices run from 0 to {} for -n {}",
                self.process,
                self.processes - 1,
                self.processes
            ));
        }
        if self.checkpoint_every == Some(0) {
            return Err("--checkpoint-every 0: give a number of epochs, 1 or more".into());
        }
        if self.checkpoint_every.is_some() && self.state.is_none() {
            return Err(
                "--checkpoint-every: checkpoints are saved in the state directory; add --state DIR"
                    .into(),
            );
        }
        if self.connect_timeout == 0 {
            return Err("--connect-timeout 0: peers need time to connect; use 1 or more".into());
        }
        let addresses = if self.processes > 1 {
            read_hostfile(self.hostfile.as_deref(), self.processes)?
        } else {
            Vec::new()
        };
        Ok(RunConfig {
            spec: self.spec,
            events: self.events,
            out: self.out,
            bucket_ms,
            lateness: self.lateness,
            bot_threshold: self.bot_threshold,
            emit_examples: self.emit_examples,
            emit_features: self.emit_features,
            scaler,
            optimizer,
            workers: self.workers,
            processes: self.processes,
            process: self.process,
            addresses,
            state: self.state,
            force: self.force,
            checkpoint_every: self.checkpoint_every,
            connect_timeout: std::time::Duration::from_secs(self.connect_timeout),
            progress: !self.quiet,
        })
    }
}

/// The addresses of all processes: the hostfile's first `processes` lines, or
/// loopback ports from 2101.
fn read_hostfile(path: Option<&std::path::Path>, processes: usize) -> Result<Vec<String>, String> {
    let Some(path) = path else {
        return Ok((0..processes)
            .map(|index| format!("127.0.0.1:{}", 2101 + index))
            .collect());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("-h {}: cannot read the hostfile: {err}", path.display()))?;
    let addresses: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect();
    if addresses.len() < processes {
        return Err(format!(
            "-h {}: has {} addresses but -n is {}; list one host:port per process",
            path.display(),
            addresses.len(),
            processes
        ));
    }
    if let Some(bad) = addresses
        .iter()
        .take(processes)
        .find(|address| !is_host_port(address))
    {
        return Err(format!(
            "-h {}: {bad:?} is not host:port (a host name or IP address, a colon, a port \
             from 1 to 65535)",
            path.display()
        ));
    }
    Ok(addresses.into_iter().take(processes).collect())
}

/// Whether `address` reads as `host:port`, as in `node1:2101`, `10.0.0.5:2101`
/// or `[::1]:2101`; the host is resolved only when connecting.
fn is_host_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && !host.contains(char::is_whitespace)
        && port.parse::<u16>().is_ok_and(|port| port > 0)
}

/// Parses `1d`, `2h`, `15m`, `30s`, `500ms` or a plain number of milliseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().ok()?;
    let scale = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => DAY_MS,
        _ => return None,
    };
    number.checked_mul(scale).filter(|ms| *ms > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Result<RunConfig, String> {
        let mut all = vec!["deltarec", "run"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)
            .map_err(|err| err.to_string())?
            .command
        {
            Command::Run(flags) => flags.validate(),
            Command::Specs | Command::Generate(_) => unreachable!(),
        }
    }

    #[test]
    fn durations_take_units_or_milliseconds() {
        assert_eq!(parse_duration("1d"), Some(DAY_MS));
        assert_eq!(parse_duration("1h"), Some(3_600_000));
        assert_eq!(parse_duration("15m"), Some(900_000));
        assert_eq!(parse_duration("30s"), Some(30_000));
        assert_eq!(parse_duration("250"), Some(250));
        for bad in [
            "",
            "0",
            "0h",
            "1x",
            "h",
            "-1d",
            "1.5h",
            "99999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn defaults_follow_the_reference_task() {
        let config = flags(&[]).unwrap();
        assert_eq!(config.bucket_ms, DAY_MS);
        assert_eq!(config.bot_threshold, 1000);
        assert_eq!(config.lateness, None);
        assert_eq!(config.optimizer.kind, OptimizerKind::Adagrad);
        assert_eq!(config.optimizer.batch_size, 256);
        assert_eq!(config.scaler, ScalerKind::ZScore);
        assert_eq!((config.workers, config.processes), (1, 1));
    }

    #[test]
    fn bad_values_get_one_line_naming_the_flag() {
        for (args, flag) in [
            (&["--bucket", "2x"][..], "--bucket"),
            (&["--optimizer", "momentum"][..], "--optimizer"),
            (&["--scaler", "robust"][..], "--scaler"),
            (&["--lr", "0"][..], "--lr"),
            (&["--batch-size", "0"][..], "--batch-size"),
            (&["-w", "0"][..], "-w"),
            (&["-n", "2", "-p", "2"][..], "-p"),
            (&["--connect-timeout", "0"][..], "--connect-timeout"),
        ] {
            let error = flags(args).unwrap_err();
            assert!(error.contains(flag), "{args:?}: {error}");
            assert!(!error.trim_end().contains('\n'), "{args:?}: {error}");
        }
    }

    #[test]
    fn dash_h_names_a_hostfile() {
        let path = std::env::temp_dir().join(format!("deltarec-hosts-{}", std::process::id()));
        std::fs::write(&path, "127.0.0.1:4000\n127.0.0.1:4001\n").unwrap();
        let config = flags(&["-n", "2", "-p", "1", "-h", path.to_str().unwrap()]).unwrap();
        assert_eq!(config.addresses, ["127.0.0.1:4000", "127.0.0.1:4001"]);
        let error = flags(&["-n", "3", "-h", path.to_str().unwrap()]).unwrap_err();
        assert!(error.contains("has 2 addresses but -n is 3"), "{error}");
        for bad in [
            "127.0.0.1",
            "127.0.0.1:http",
            ":4000",
            "127.0.0.1:0",
            "a b:1",
            "h:70000",
        ] {
            std::fs::write(&path, format!("127.0.0.1:4000\n{bad}\n")).unwrap();
            let error = flags(&["-n", "2", "-h", path.to_str().unwrap()]).unwrap_err();
            assert!(error.contains("is not host:port"), "{bad}: {error}");
        }
        std::fs::write(&path, "localhost:4000\n[::1]:4001\n").unwrap();
        assert!(flags(&["-n", "2", "-h", path.to_str().unwrap()]).is_ok());
        let _ = std::fs::remove_file(&path);
    }
}
