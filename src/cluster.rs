//! Cluster mode: connects this process to every other process of the job,
//! hands the connections to timely, and watches the run, so that a peer that
//! never starts, or stops mid-run, ends the run with a one-line error rather
//! than a hang.
//!
//! timely's own connection loop (`timely_communication::networking`) retries
//! forever and reports on stdout. Here, as there, process `i` listens on line
//! `i` of the hostfile and dials every lower-numbered process; but the whole
//! phase has a deadline, and each connection opens with a handshake
//! ([`Hello`]) that checks both sides run the same job: the same `-n`, `-w`,
//! and flags and input sizes that shape the dataflow.
//!
//! Once the run starts, timely's network threads (`timely:send-P` and
//! `timely:recv-P` for peer process `P`) panic with "timely communication
//! error: ..." when a connection breaks, while the worker threads wait for
//! progress messages that will never come. A panic hook records the first
//! [`Failure`], and [`wait_for_workers`] returns it within [`POLL`].
//!
//! NB: connections are neither authenticated nor encrypted: anyone who can
//! reach the ports can read a run's exchanges or disturb it. Run clusters on a
//! trusted network.

use std::any::Any;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::panic::PanicHookInfo;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, Once, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::{Hooks, WorkerGuards};

/// How often [`wait_for_workers`] looks for a failure, and the connection
/// phase for a peer.
pub const POLL: Duration = Duration::from_millis(50);

/// How long a connection accepted from an unknown source may take to say
/// hello before it is dropped as a stranger.
const HELLO_WAIT: Duration = Duration::from_secs(5);

/// First bytes of every handshake.
const MAGIC: &[u8; 8] = b"deltarec";

/// Version of the handshake and of what follows it; both sides must agree.
const PROTOCOL: u64 = 1;

/// Length of an encoded [`Hello`]: the magic, then five big-endian `u64`.
const HELLO_BYTES: usize = 8 + 5 * 8;

/// Name of the thread that joins timely's threads for [`wait_for_workers`].
const JOIN_THREAD: &str = "deltarec:join";

/// timely's panic message when the intra-process queue of a thread that
/// panicked earlier is used: a consequence, never the cause.
const POISONED: &str = "MergeQueue poisoned.";

/// What a process tells each peer as it connects; both sides check that they
/// agree before the run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's index (`-p`).
    pub process: usize,
    /// Processes in the job (`-n`).
    pub processes: usize,
    /// Worker threads per process (`-w`).
    pub workers: usize,
    /// Fingerprint of the flags and inputs that every process must share.
    pub job: u64,
}

impl Hello {
    fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut bytes = [0; HELLO_BYTES];
        bytes[..8].copy_from_slice(MAGIC);
        let fields = [
            PROTOCOL,
            self.process as u64,
            self.processes as u64,
            self.workers as u64,
            self.job,
        ];
        for (chunk, field) in bytes[8..].chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&field.to_be_bytes());
        }
        bytes
    }

    /// Decodes a hello; `None` when the bytes do not come from this version
    /// of deltarec.
    fn decode(bytes: &[u8; HELLO_BYTES]) -> Option<Hello> {
        let mut fields = bytes[8..]
            .chunks_exact(8)
            .map(|chunk| u64::from_be_bytes(chunk.try_into().expect("chunks of 8 bytes")));
        let mut next = || fields.next().expect("five fields");
        if &bytes[..8] != MAGIC || next() != PROTOCOL {
            return None;
        }
        Some(Hello {
            process: next() as usize,
            processes: next() as usize,
            workers: next() as usize,
            job: next(),
        })
    }

    /// What differs between this process's hello and a peer's, as the end of
    /// a sentence starting "process P at ADDRESS".
    fn disagreement(&self, peer: &Hello) -> Option<String> {
        if peer.processes != self.processes {
            return Some(format!(
                "was started with -n {}, this process with -n {}; give every process the same \
                 -n and hostfile",
                peer.processes, self.processes
            ));
        }
        if peer.workers != self.workers {
            return Some(format!(
                "was started with -w {}, this process with -w {}; give every process the same -w",
                peer.workers, self.workers
            ));
        }
        if peer.job != self.job {
            return Some(
                "runs a different job: its run flags, its input files, or the state or \
                 checkpoint it resumes from (--state) differ from this process's; give every \
                 process the same flags, identical input files and the same state directory \
                 content (checkpoint.bin included)"
                    .into(),
            );
        }
        None
    }
}

/// Why the connection phase failed. Each message is one line naming the peer
/// by process index and address.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// This process cannot listen on its own address.
    #[error("cannot listen on {address} (line {} of the hostfile, for -p {process}): {cause}", process + 1)]
    Listen {
        /// This process's index.
        process: usize,
        /// Its address.
        address: String,
        /// Why.
        cause: String,
    },
    /// A lower-numbered peer could not be reached before the deadline.
    #[error(
        "cannot reach process {process} at {address} within {seconds} s ({cause}); start it \
         with -p {process} and the same hostfile, or raise --connect-timeout"
    )]
    Unreachable {
        /// The peer's index.
        process: usize,
        /// Its address.
        address: String,
        /// The timeout, in seconds.
        seconds: u64,
        /// The last error seen.
        cause: String,
    },
    /// A higher-numbered peer did not connect before the deadline.
    #[error(
        "process {process} at {address} did not connect within {seconds} s{more}; start it \
         with -p {process} and the same hostfile, or raise --connect-timeout"
    )]
    Absent {
        /// The first missing peer's index.
        process: usize,
        /// Its address.
        address: String,
        /// The timeout, in seconds.
        seconds: u64,
        /// How many more peers are missing, as text.
        more: String,
    },
    /// A peer runs with other settings, or claims the wrong index.
    #[error("process {process} at {address} {disagreement}")]
    Disagrees {
        /// The peer's index.
        process: usize,
        /// Its address.
        address: String,
        /// What differs, and how to mend it.
        disagreement: String,
    },
    /// A connection could not be set up for timely.
    #[error("connection to process {process} at {address}: {cause}")]
    Io {
        /// The peer's index.
        process: usize,
        /// Its address.
        address: String,
        /// Why.
        cause: io::Error,
    },
}

/// Connects to every other process of the job, within `timeout`.
///
/// Returns one stream per process, in process order, with `None` at this
/// process's own index: what timely's `initialize_networking_from_sockets`
/// expects.
///
/// # Errors
/// When this process cannot listen on its address, when a peer cannot be
/// reached or does not connect in time, or when a peer disagrees on `-n`,
/// `-w`, its index or the job.
pub fn connect(
    addresses: &[String],
    hello: Hello,
    timeout: Duration,
) -> Result<Vec<Option<TcpStream>>, ConnectError> {
    let deadline = Instant::now() + timeout;
    let phase = Phase {
        addresses,
        hello,
        deadline,
        seconds: timeout.as_secs(),
    };

    // Listen first, so that higher-numbered peers can queue their connections
    // while this process dials the lower-numbered ones.
    let listener = phase.listen()?;
    let mut streams = Vec::with_capacity(addresses.len());
    for process in 0..hello.process {
        streams.push(Some(phase.dial(process)?));
    }
    streams.push(None);
    streams.extend(phase.accept_all(&listener)?.into_iter().map(Some));

    // timely expects blocking streams without timeouts.
    for (process, stream) in streams.iter().enumerate() {
        if let Some(stream) = stream {
            stream
                .set_read_timeout(None)
                .and_then(|()| stream.set_write_timeout(None))
                .and_then(|()| stream.set_nodelay(true))
                .map_err(|cause| phase.io(process, cause))?;
        }
    }
    Ok(streams)
}

/// The state of one connection phase.
struct Phase<'a> {
    addresses: &'a [String],
    hello: Hello,
    deadline: Instant,
    seconds: u64,
}

impl Phase<'_> {
    /// Time left before the deadline, at least a millisecond (a zero timeout
    /// means "none" to the socket calls).
    fn remaining(&self) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn io(&self, process: usize, cause: io::Error) -> ConnectError {
        ConnectError::Io {
            process,
            address: self.addresses[process].clone(),
            cause,
        }
    }

    fn disagrees(&self, process: usize, disagreement: String) -> ConnectError {
        ConnectError::Disagrees {
            process,
            address: self.addresses[process].clone(),
            disagreement,
        }
    }

    /// Binds this process's address, the first of its resolutions that works.
    fn listen(&self) -> Result<TcpListener, ConnectError> {
        let process = self.hello.process;
        let address = &self.addresses[process];
        let error = |cause: String| ConnectError::Listen {
            process,
            address: address.clone(),
            cause,
        };
        let candidates: Vec<SocketAddr> = address
            .to_socket_addrs()
            .map_err(|err| error(err.to_string()))?
            .collect();
        let listener = TcpListener::bind(&candidates[..]).map_err(|err| {
            let hint = if err.kind() == io::ErrorKind::AddrInUse {
                "; is another process running with this -p, or another program on this port?"
            } else {
                ""
            };
            error(format!("{err}{hint}"))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|err| error(err.to_string()))?;
        Ok(listener)
    }

    /// Dials a lower-numbered peer until it answers or the deadline passes.
    fn dial(&self, process: usize) -> Result<TcpStream, ConnectError> {
        let address = &self.addresses[process];
        let mut last_error = String::from("no attempt");
        while !self.expired() {
            match self.try_dial(address) {
                Ok(stream) => match self.exchange(&stream) {
                    Ok(Some(peer)) if peer.process == process => {
                        if let Some(disagreement) = self.hello.disagreement(&peer) {
                            return Err(self.disagrees(process, disagreement));
                        }
                        return Ok(stream);
                    }
                    Ok(Some(peer)) => {
                        return Err(self.disagrees(
                            process,
                            format!(
                                "says it is process {}; check each process's -p against the \
                                 hostfile",
                                peer.process
                            ),
                        ));
                    }
                    Ok(None) => {
                        return Err(self.disagrees(
                            process,
                            "answered, but not as a process of this deltarec version; check \
                             the hostfile"
                                .into(),
                        ));
                    }
                    // The peer went away during the handshake: try again.
                    Err(err) => last_error = err.to_string(),
                },
                Err(err) => last_error = err.to_string(),
            }
            thread::sleep(POLL.min(self.remaining()));
        }
        Err(ConnectError::Unreachable {
            process,
            address: address.clone(),
            seconds: self.seconds,
            cause: last_error,
        })
    }

    /// One attempt to open a TCP connection to any resolution of `address`.
    fn try_dial(&self, address: &str) -> io::Result<TcpStream> {
        let mut last_error =
            io::Error::new(io::ErrorKind::NotFound, "the name resolves to nothing");
        for candidate in address.to_socket_addrs()? {
            let attempt = self.remaining().min(Duration::from_secs(1));
            match TcpStream::connect_timeout(&candidate, attempt) {
                Ok(stream) => return Ok(stream),
                Err(err) => last_error = err,
            }
        }
        Err(last_error)
    }

    /// Accepts every higher-numbered peer, until the deadline. Connections
    /// that do not say a deltarec hello are dropped with a warning.
    fn accept_all(&self, listener: &TcpListener) -> Result<Vec<TcpStream>, ConnectError> {
        let first = self.hello.process + 1;
        let mut accepted: Vec<Option<TcpStream>> =
            (first..self.hello.processes).map(|_| None).collect();
        while accepted.iter().any(Option::is_none) {
            let (stream, from) = match listener.accept() {
                Ok(connection) => connection,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    if self.expired() {
                        return Err(self.absent(first, &accepted));
                    }
                    thread::sleep(POLL.min(self.remaining()));
                    continue;
                }
                Err(err) => return Err(self.io(self.hello.process, err)),
            };
            let peer = stream
                .set_nonblocking(false)
                .and_then(|()| self.exchange(&stream));
            let peer = match peer {
                Ok(Some(peer)) => peer,
                Ok(None) | Err(_) => {
                    eprintln!("deltarec: ignored a connection from {from}: not a deltarec peer");
                    continue;
                }
            };
            let slot = peer
                .process
                .checked_sub(first)
                .and_then(|slot| accepted.get_mut(slot))
                .filter(|slot| slot.is_none());
            let Some(slot) = slot else {
                let process = peer.process.min(self.hello.processes - 1);
                return Err(self.disagrees(
                    process,
                    format!(
                        "(connecting from {from}) says it is process {}, which is not expected \
                         to connect to process {} or already has; check each process's -p",
                        peer.process, self.hello.process
                    ),
                ));
            };
            if let Some(disagreement) = self.hello.disagreement(&peer) {
                return Err(self.disagrees(peer.process, disagreement));
            }
            *slot = Some(stream);
        }
        Ok(accepted.into_iter().flatten().collect())
    }

    fn absent(&self, first: usize, accepted: &[Option<TcpStream>]) -> ConnectError {
        let mut missing = accepted
            .iter()
            .enumerate()
            .filter(|(_, stream)| stream.is_none())
            .map(|(slot, _)| first + slot);
        let process = missing.next().expect("a peer is missing");
        let more = match missing.count() {
            0 => String::new(),
            count => format!(" (nor did {count} more)"),
        };
        ConnectError::Absent {
            process,
            address: self.addresses[process].clone(),
            seconds: self.seconds,
            more,
        }
    }

    /// Sends this process's hello and reads the peer's; `None` when the peer
    /// does not speak this version's handshake.
    fn exchange(&self, mut stream: &TcpStream) -> io::Result<Option<Hello>> {
        let wait = self.remaining().min(HELLO_WAIT);
        stream.set_read_timeout(Some(wait))?;
        stream.set_write_timeout(Some(wait))?;
        stream.write_all(&self.hello.encode())?;
        let mut bytes = [0; HELLO_BYTES];
        stream.read_exact(&mut bytes)?;
        Ok(Hello::decode(&bytes))
    }
}

/// timely's allocators for this process's workers, exchanging with the peers
/// over `streams`, and the guard of timely's network threads, for
/// `timely::execute::execute_from`.
///
/// # Errors
/// When timely cannot start its network threads.
pub fn allocators(
    streams: Vec<Option<TcpStream>>,
    process: usize,
    workers: usize,
) -> io::Result<(Vec<AllocatorBuilder>, Box<dyn Any + Send>)> {
    let hooks = Hooks::default();
    let local =
        ProcessBuilder::new_typed_vector(workers, hooks.refill.clone(), hooks.spill.clone());
    let (builders, guard) =
        initialize_networking_from_sockets(local, streams, process, workers, hooks)?;
    let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
    Ok((builders, Box::new(guard)))
}

/// The first failure of a run, as seen by this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The connection to a peer broke: the peer stopped, crashed or became
    /// unreachable.
    Peer {
        /// The peer's index.
        process: usize,
        /// timely's report, such as "reading data: socket closed".
        cause: String,
    },
    /// A worker thread of this process panicked: a bug.
    Worker {
        /// The worker's index within this process.
        local: usize,
        /// The panic message.
        message: String,
    },
    /// A worker of this process stopped on an error, such as an unreadable
    /// input file.
    WorkerError(String),
}

/// The first failure since [`arm`]; written by the panic hook and [`hold`].
///
/// NB: one per process: two runs at once in one process would share it.
static FAILURE: Mutex<Option<Failure>> = Mutex::new(None);

/// Clears any earlier failure and installs the panic hook that records
/// failures of timely's threads. Call before starting the workers.
pub fn arm() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !on_panic(info) {
                previous(info);
            }
        }));
    });
    *FAILURE.lock().unwrap_or_else(PoisonError::into_inner) = None;
}

/// The failure recorded since [`arm`], if any.
pub fn failure() -> Option<Failure> {
    FAILURE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Records `failure` unless an earlier one is recorded: later failures are
/// usually its consequences.
fn record(failure: Failure) {
    FAILURE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert(failure);
}

/// Records a worker's error and holds the worker forever.
///
/// A worker that returned would close its inputs, and the dataflow would
/// complete without its rows, on every process. Held, it keeps its share of
/// the dataflow open, so nothing completes; [`wait_for_workers`] then returns
/// the error and the process exits, which its peers see as a broken
/// connection.
pub fn hold(error: String) -> ! {
    record(Failure::WorkerError(error));
    loop {
        thread::park();
    }
}

/// Records the failure a panic stands for; returns whether it is fully
/// handled, so that the standard panic report would only be noise.
fn on_panic(info: &PanicHookInfo) -> bool {
    let current = thread::current();
    let Some(name) = current.name() else {
        return false;
    };
    let message = info.payload_as_str().unwrap_or("(no message)");
    let index = |prefix: &str| name.strip_prefix(prefix)?.parse::<usize>().ok();

    if let Some(process) = index("timely:send-").or_else(|| index("timely:recv-")) {
        if message != POISONED {
            let cause = message.strip_prefix("timely communication error: ");
            record(Failure::Peer {
                process,
                cause: cause.unwrap_or(message).to_string(),
            });
        }
        return true;
    }
    if let Some(local) = index("timely:work-") {
        record(Failure::Worker {
            local,
            message: message.to_string(),
        });
        // A poisoned queue follows an earlier failure; anything else is a bug
        // and keeps its standard report, with its location.
        return message == POISONED;
    }
    // The joining thread panics when it finds a network thread that panicked.
    name == JOIN_THREAD
}

/// Waits for this process's workers, or for the first [`Failure`], whichever
/// comes first.
///
/// # Errors
/// The failure. NB: timely's threads are then left running (most are waiting
/// forever), so the caller should end the process soon.
pub fn wait_for_workers<T: Send + 'static>(
    guards: WorkerGuards<T>,
) -> Result<Vec<Result<T, String>>, Failure> {
    // Joining blocks, and panics when a network thread did; it gets a thread
    // of its own so that this one can watch.
    let (sender, receiver) = mpsc::channel();
    let joiner = thread::Builder::new()
        .name(JOIN_THREAD.into())
        .spawn(move || {
            let _ = sender.send(guards.join());
        });
    if let Err(err) = joiner {
        return Err(Failure::WorkerError(format!(
            "cannot start a thread to wait for the workers: {err}"
        )));
    }
    loop {
        if let Some(failure) = failure() {
            return Err(failure);
        }
        match receiver.recv_timeout(POLL) {
            Ok(outcomes) => {
                let failed = outcomes.iter().any(Result::is_err);
                return match failure() {
                    Some(failure) if failed => Err(failure),
                    _ => Ok(outcomes),
                };
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(failure().unwrap_or_else(|| {
                    Failure::WorkerError("timely's threads stopped without a result".into())
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(process: usize) -> Hello {
        Hello {
            process,
            processes: 2,
            workers: 1,
            job: 0xfeed,
        }
    }

    fn free_addresses(count: usize) -> Vec<String> {
        let listeners: Vec<TcpListener> = (0..count)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
            .collect();
        listeners
            .iter()
            .map(|listener| listener.local_addr().unwrap().to_string())
            .collect()
    }

    /// Runs `connect` for each hello on its own thread.
    fn connect_all(
        addresses: &[String],
        hellos: &[Hello],
        timeout: Duration,
    ) -> Vec<Result<usize, String>> {
        let handles: Vec<_> = hellos
            .iter()
            .map(|&hello| {
                let addresses = addresses.to_vec();
                thread::spawn(move || {
                    connect(&addresses, hello, timeout)
                        .map(|streams| streams.iter().flatten().count())
                        .map_err(|err| err.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn hello_round_trips_and_rejects_strangers() {
        let sent = hello(1);
        assert_eq!(Hello::decode(&sent.encode()), Some(sent));
        let mut stranger = sent.encode();
        stranger[0] = b'D';
        assert_eq!(Hello::decode(&stranger), None);
        let mut newer = sent.encode();
        newer[15] = 2;
        assert_eq!(Hello::decode(&newer), None);
    }

    #[test]
    fn three_processes_connect_to_each_other() {
        let addresses = free_addresses(3);
        let hellos: Vec<Hello> = (0..3)
            .map(|process| Hello {
                processes: 3,
                ..hello(process)
            })
            .collect();
        let outcomes = connect_all(&addresses, &hellos, Duration::from_secs(10));
        assert_eq!(outcomes, vec![Ok(2), Ok(2), Ok(2)]);
    }

    #[test]
    fn disagreeing_peers_are_named_with_the_difference() {
        let addresses = free_addresses(2);
        for (other, expected) in [
            (
                Hello {
                    processes: 3,
                    ..hello(1)
                },
                "-n 3",
            ),
            (
                Hello {
                    workers: 2,
                    ..hello(1)
                },
                "-w 2",
            ),
            (Hello { job: 1, ..hello(1) }, "different job"),
        ] {
            let outcomes = connect_all(&addresses, &[hello(0), other], Duration::from_secs(10));
            let error = outcomes
                .into_iter()
                .find_map(Result::err)
                .expect("an error");
            assert!(error.contains(expected), "{error}");
            assert!(error.contains("process "), "{error}");
        }
    }

    #[test]
    fn a_peer_at_the_wrong_line_is_named() {
        let addresses = free_addresses(2);
        let listener = TcpListener::bind(&addresses[0]).unwrap();
        let impostor = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(&hello(1).encode()).unwrap();
            let mut bytes = [0; HELLO_BYTES];
            stream.read_exact(&mut bytes).unwrap();
        });
        let error = connect(&addresses, hello(1), Duration::from_secs(10)).unwrap_err();
        let error = error.to_string();
        assert!(
            error.contains(&format!("process 0 at {}", addresses[0])),
            "{error}"
        );
        assert!(error.contains("says it is process 1"), "{error}");
        impostor.join().unwrap();
    }

    #[test]
    fn a_missing_peer_times_out_with_its_index_and_address() {
        let addresses = free_addresses(2);
        let started = Instant::now();
        let outcomes = connect_all(&addresses, &[hello(0)], Duration::from_secs(1));
        let error = outcomes[0].clone().unwrap_err();
        assert!(
            error.contains(&format!("process 1 at {} did not connect", addresses[1])),
            "{error}"
        );
        let outcomes = connect_all(&addresses, &[hello(1)], Duration::from_secs(1));
        let error = outcomes[0].clone().unwrap_err();
        assert!(
            error.contains(&format!("cannot reach process 0 at {}", addresses[0])),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_stranger_on_the_port_is_ignored() {
        let addresses = free_addresses(2);
        let target = addresses[0].clone();
        let stranger = thread::spawn(move || {
            let started = Instant::now();
            loop {
                if let Ok(mut stream) = TcpStream::connect(&target) {
                    let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n and some more bytes here..");
                    return;
                }
                assert!(started.elapsed() < Duration::from_secs(5));
                thread::sleep(Duration::from_millis(10));
            }
        });
        let first = {
            let addresses = addresses.clone();
            thread::spawn(move || connect(&addresses, hello(0), Duration::from_secs(10)).is_ok())
        };
        stranger.join().unwrap();
        thread::sleep(Duration::from_millis(100));
        let second = connect(&addresses, hello(1), Duration::from_secs(10));
        assert!(
            second.is_ok(),
            "{:?}",
            second.err().map(|err| err.to_string())
        );
        assert!(first.join().unwrap());
    }
}
