//! Cluster mode end to end. A job of several processes must write exactly what
//! one process with as many workers writes (model.json bit for bit, metrics
//! apart from timings), only process 0 may write, and a process whose peer
//! never starts, or dies mid-run, must exit non-zero within a bound, naming
//! the peer.
//!
//! Every process listens on 127.0.0.1 only, on ports found free by binding
//! port 0; every process a test spawns is killed when the test ends, however
//! it ends.

mod common;

use common::trainer_outputs::real_dir;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::r#gen::{BotOpts, GenOpts, generate, write_log};
use common::oracle::Format;

/// How long a normal run of one test may take, on a loaded two-core machine.
const RUN_BOUND: Duration = Duration::from_secs(180);

/// How long a process may take to fail once its failure is due: the task's
/// "within 10 seconds".
const FAILURE_BOUND: Duration = Duration::from_secs(10);

/// Processes spawned by a test; all are killed when it drops.
#[derive(Default)]
struct Spawned {
    children: Vec<Child>,
}

impl Spawned {
    /// Starts `deltarec` with `args`, stdout and stderr captured.
    fn start(&mut self, args: &[String]) -> usize {
        let child = Command::new(env!("CARGO_BIN_EXE_deltarec"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the deltarec binary starts");
        self.children.push(child);
        self.children.len() - 1
    }

    /// Waits up to `bound` for child `index`; `None` when it still runs.
    fn wait(&mut self, index: usize, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.children[index].try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Child `index`'s stdout and stderr, once it has exited.
    fn output(&mut self, index: usize) -> (String, String) {
        let child = &mut self.children[index];
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stdout.take() {
            pipe.read_to_string(&mut stdout).expect("stdout");
        }
        if let Some(mut pipe) = child.stderr.take() {
            pipe.read_to_string(&mut stderr).expect("stderr");
        }
        (stdout, stderr)
    }

    /// Sends SIGKILL to child `index`.
    fn kill(&mut self, index: usize) {
        self.children[index].kill().expect("kill");
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `count` loopback addresses whose ports were free a moment ago.
fn free_addresses(count: usize) -> Vec<String> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("an address").to_string())
        .collect()
}

/// Writes a hostfile for `addresses` into `dir`.
fn hostfile(dir: &Path, addresses: &[String]) -> PathBuf {
    let path = dir.join("hosts");
    std::fs::write(&path, addresses.join("\n") + "\n").expect("writing the hostfile");
    path
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| arg.to_string()).collect()
}

/// The arguments of process `process` of `processes`, writing to `out`.
fn cluster_args(
    run: &[String],
    out: &Path,
    hosts: &Path,
    process: usize,
    processes: usize,
) -> Vec<String> {
    let mut args = run.to_vec();
    args.extend(strings(&[
        "--out",
        &out.display().to_string(),
        "-h",
        &hosts.display().to_string(),
    ]));
    args.extend(strings(&[
        "-n",
        &processes.to_string(),
        "-p",
        &process.to_string(),
    ]));
    args
}

/// Runs `run` as `processes` processes of `workers` workers, each with its own
/// `--out`; checks that all succeed, that only process 0 writes or prints, and
/// returns process 0's output directory.
fn run_cluster(dir: &Path, run: &[String], processes: usize, workers: usize) -> PathBuf {
    let hosts = hostfile(dir, &free_addresses(processes));
    let mut spawned = Spawned::default();
    let outs: Vec<PathBuf> = (0..processes)
        .map(|p| dir.join(format!("cluster-p{p}")))
        .collect();
    for (process, out) in outs.iter().enumerate() {
        let mut args = cluster_args(run, out, &hosts, process, processes);
        args.extend(strings(&["-w", &workers.to_string()]));
        spawned.start(&args);
    }
    for (process, out) in outs.iter().enumerate() {
        let status = spawned.wait(process, RUN_BOUND);
        let (stdout, stderr) = spawned.output(process);
        assert!(
            status.is_some_and(|status| status.success()),
            "process {process}: {status:?}\n{stderr}"
        );
        if process > 0 {
            assert_eq!(
                (stdout.as_str(), stderr.as_str()),
                ("", ""),
                "process {process} is quiet"
            );
            assert!(!out.exists(), "process {process} wrote {}", out.display());
        } else {
            assert!(stdout.starts_with("wrote "), "{stdout}");
        }
    }
    outs[0].clone()
}

/// Runs `run` as one process of `workers` workers.
fn run_single(dir: &Path, run: &[String], workers: usize) -> PathBuf {
    let out = dir.join("single");
    let mut args = run.to_vec();
    args.extend(strings(&[
        "--out",
        &out.display().to_string(),
        "-w",
        &workers.to_string(),
    ]));
    let mut spawned = Spawned::default();
    spawned.start(&args);
    let status = spawned.wait(0, RUN_BOUND);
    let (_, stderr) = spawned.output(0);
    assert!(
        status.is_some_and(|status| status.success()),
        "{status:?}\n{stderr}"
    );
    out
}

/// The metrics lines without what depends on timing or on `--out`.
fn metrics_without_timings(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let object = value.as_object_mut().expect("an object");
            for key in ["wall_seconds", "events_per_second", "out"] {
                object.remove(key);
            }
            value
        })
        .collect()
}

/// Checks that two output directories hold the same results, byte for byte
/// apart from the timings in the metrics.
fn assert_same_outputs(cluster: &Path, single: &Path) {
    let mut files = vec![
        "model.json",
        "scaler.json",
        "quarantine.csv",
        "examples.csv",
    ];
    files.extend([
        "features/users.csv",
        "features/items.csv",
        "features/pairs.csv",
    ]);
    for file in files {
        let read = |dir: &Path| {
            std::fs::read(dir.join(file))
                .unwrap_or_else(|err| panic!("{}/{file}: {err}", dir.display()))
        };
        assert!(read(cluster) == read(single), "{file} differs");
    }
    assert_eq!(
        metrics_without_timings(cluster),
        metrics_without_timings(single)
    );
}

/// The flags every comparison run shares.
fn run_flags(events: &Path, bucket: &str, extra: &[&str]) -> Vec<String> {
    let mut args = strings(&["run", "--quiet", "--emit-examples", "--emit-features"]);
    args.extend(strings(&[
        "--events",
        &events.display().to_string(),
        "--bucket",
        bucket,
    ]));
    args.extend(strings(extra));
    args
}

#[test]
fn two_processes_write_what_one_process_with_two_workers_writes_on_a_real_sample() {
    let Some(real) = real_dir() else { return };
    let events = real.join("taobao-userbehavior/UserBehavior_timesorted110k_atguigu.csv");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let run = run_flags(&events, "1h", &[]);
    let cluster = run_cluster(dir.path(), &run, 2, 1);
    let single = run_single(dir.path(), &run, 2);
    assert_same_outputs(&cluster, &single);
}

#[test]
fn two_processes_write_what_one_process_with_two_workers_writes_on_a_seeded_log() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut opts = GenOpts::days(6);
    opts.malformed = true;
    opts.bot = Some(BotOpts {
        user: 4_000_000_000,
        threshold: 40,
        epoch: 2,
    });
    let text = generate(21, Format::Rees46, &opts);
    let events = write_log(dir.path(), "log.csv", &text);
    let run = run_flags(&events, "1d", &["--bot-threshold", "40"]);
    let cluster = run_cluster(dir.path(), &run, 2, 1);
    let single = run_single(dir.path(), &run, 2);
    assert_same_outputs(&cluster, &single);
}

#[test]
fn the_cluster_script_runs_three_processes_like_one_with_three_workers() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let text = generate(22, Format::Taobao, &GenOpts::hours(12));
    let events = write_log(dir.path(), "log.csv", &text);
    let run = run_flags(&events, "1h", &[]);
    let out = dir.path().join("script");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh");
    let mut child = Command::new(script)
        .arg("3")
        .args(&run)
        .args(["--out", &out.display().to_string(), "-w", "1"])
        .env("DELTAREC", env!("CARGO_BIN_EXE_deltarec"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs scripts/cluster.sh");
    let deadline = Instant::now() + RUN_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // NB: killing the script runs its cleanup, which stops deltarec.
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    let _ = child.wait();
    assert!(
        status.is_some_and(|status| status.success()),
        "{status:?}\n{stderr}"
    );
    let single = run_single(dir.path(), &run, 3);
    assert_same_outputs(&out, &single);
}

#[test]
fn a_process_whose_peer_never_starts_fails_after_the_connect_timeout() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let addresses = free_addresses(2);
    let hosts = hostfile(dir.path(), &addresses);
    let run = strings(&["run", "--quiet", "--connect-timeout", "2"]);
    for (started, absent) in [(0, 1), (1, 0)] {
        let mut spawned = Spawned::default();
        let out = dir.path().join(format!("out-{started}"));
        spawned.start(&cluster_args(&run, &out, &hosts, started, 2));
        let status = spawned.wait(0, Duration::from_secs(2) + FAILURE_BOUND);
        let (_, stderr) = spawned.output(0);
        assert!(
            status.is_some_and(|status| !status.success()),
            "{status:?}\n{stderr}"
        );
        let peer = format!("process {absent} at {}", addresses[absent]);
        assert!(stderr.contains(&peer), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        let written = std::fs::read_dir(&out).map(|dir| dir.count()).unwrap_or(0);
        assert_eq!(written, 0, "no output file from a failed run");
    }
}

#[test]
fn processes_started_with_different_n_refuse_each_other() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let addresses = free_addresses(3);
    let hosts = hostfile(dir.path(), &addresses);
    let run = strings(&["run", "--quiet", "--connect-timeout", "5"]);
    let mut spawned = Spawned::default();
    spawned.start(&cluster_args(&run, &dir.path().join("a"), &hosts, 0, 2));
    spawned.start(&cluster_args(&run, &dir.path().join("b"), &hosts, 1, 3));
    for (process, other) in [(0, 1), (1, 0)] {
        let status = spawned.wait(process, FAILURE_BOUND);
        let (_, stderr) = spawned.output(process);
        assert!(
            status.is_some_and(|status| !status.success()),
            "{status:?}\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("process {other} at {}", addresses[other])),
            "{stderr}"
        );
        assert!(stderr.contains("-n"), "{stderr}");
    }
}

#[test]
fn a_peer_killed_mid_run_makes_the_other_process_fail_naming_it() {
    // About 12k rows in thousands of one-second epochs: some 10 s of work for
    // two processes, killed after 1.5 s.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut opts = GenOpts::hours(24);
    opts.chains_per_epoch = 200;
    opts.users = 200;
    opts.items = 300;
    let text = generate(23, Format::Taobao, &opts);
    let events = write_log(dir.path(), "log.csv", &text);
    let run = run_flags(&events, "1s", &[]);

    for victim in [1, 0] {
        let survivor = 1 - victim;
        let addresses = free_addresses(2);
        let hosts = hostfile(dir.path(), &addresses);
        let outs: Vec<PathBuf> = (0..2)
            .map(|p| dir.path().join(format!("out-{victim}-{p}")))
            .collect();
        let mut spawned = Spawned::default();
        for (process, out) in outs.iter().enumerate() {
            spawned.start(&cluster_args(&run, out, &hosts, process, 2));
        }
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            spawned.wait(survivor, Duration::ZERO).is_none(),
            "the run ended before the kill"
        );
        spawned.kill(victim);

        let status = spawned.wait(survivor, FAILURE_BOUND);
        let (_, stderr) = spawned.output(survivor);
        assert!(
            status.is_some_and(|status| !status.success()),
            "{status:?}\n{stderr}"
        );
        let peer = format!(
            "lost the connection to process {victim} at {}",
            addresses[victim]
        );
        assert!(stderr.contains(&peer), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(
            !outs[0].join("metrics.jsonl").exists(),
            "no outputs after a failure"
        );
    }
}

#[test]
fn two_resumed_processes_write_what_one_resumed_process_writes() {
    use common::r#gen::{split_epochs, write_parts};
    use common::oracle::DAY_MS;

    // Days 0-3 saved by one process; days 4-5 resumed from copies of it. The
    // saved aggregates the resumed day touches are split over every worker of
    // both processes, and each must be entered once.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut opts = GenOpts::days(6);
    opts.users = 400;
    opts.items = 600;
    let text = generate(24, Format::Taobao, &opts);
    let start = opts.start_ms / DAY_MS;
    let parts = split_epochs(&text, Format::Taobao, DAY_MS, &[start + 4]);
    let files = write_parts(dir.path(), "part", &parts);
    let states = [
        dir.path().join("state-cluster"),
        dir.path().join("state-single"),
    ];
    let state_flags =
        |state: &Path| strings(&["--spec", "taobao", "--state", &state.display().to_string()]);
    let mut first = run_flags(&files[0], "1d", &[]);
    first.extend(state_flags(&states[0]));
    run_single(&dir.path().join("first"), &first, 1);
    std::fs::create_dir_all(&states[1]).expect("a state directory");
    std::fs::copy(states[0].join("state.bin"), states[1].join("state.bin")).expect("a state copy");

    let resumed = |state: &Path| {
        let mut args = run_flags(&files[1], "1d", &[]);
        args.extend(state_flags(state));
        args
    };
    let cluster = run_cluster(dir.path(), &resumed(&states[0]), 2, 2);
    let single = run_single(dir.path(), &resumed(&states[1]), 4);
    assert_same_outputs(&cluster, &single);
    let saved = |state: &Path| std::fs::read(state.join("state.bin")).expect("a saved state");
    assert!(
        saved(&states[0]) == saved(&states[1]),
        "the saved states differ"
    );
}
