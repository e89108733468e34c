//! The container shim: one small process per container that owns the container's stdio, as
//! conmon does for CRI-O and `containerd-shim` for containerd.
//!
//! Why a process and not the agent: whoever holds the read ends of a container's stdout and
//! stderr, and the primary side of its terminal, must outlive the agent. Were they the agent's,
//! an agent restart would close them: the container's next write would die of `SIGPIPE`, a
//! terminal would hang up, and output written while no agent runs would be lost. So the agent
//! re-executes its own binary (`kinetic __shim <spec>`, a hidden subcommand; the node crate's
//! tests run the `kinetic-shim` binary, the same code) once per container start. The shim:
//!
//! 1. starts a new session (no terminal's signals reach it) and becomes the child subreaper,
//!    so the container's init process, orphaned when `runc run -d` returns, becomes *its*
//!    child: it reaps it and knows the exit code even when the agent restarted meanwhile;
//! 2. runs `runc run -d` with pipes as the container's stdout, stderr and (for `stdin: true`)
//!    stdin, or with `--console-socket` for a `tty: true` container, receiving the terminal's
//!    primary side from runc (`SCM_RIGHTS`);
//! 3. reports `{"pid": …}` or `{"error": …}` on its stdout, which the agent reads to the end,
//!    then points its stdout at `/dev/null`;
//! 4. writes every chunk of output to the container's log file in the CRI log format kubelet
//!    reads (`2026-12-06T22:00:00.123456789Z stdout F text`; `P` for a chunk that ends
//!    mid-line, as conmon writes it, so `logs -f` shows a prompt without waiting for its
//!    newline), one timestamp per chunk, taken when it is read;
//! 5. serves `attach.sock` in the bundle: each connection receives the output from then on and
//!    may write stdin, close it (`stdinOnce`) and resize the terminal;
//! 6. when the container's init exits, drains the output, writes the exit code to `exit`
//!    (write and rename) and exits itself.
//!
//! Files in the bundle directory: `shim.pid`, `pid` (runc's), `exit`, `attach.sock`,
//! `console.sock` (gone once runc handed the terminal over). Unix socket paths are limited to
//! 108 bytes and bundle paths can be longer, so sockets are bound and reached through
//! `/proc/<pid>/fd/<directory fd>/<name>`.
//!
//! A crash of the agent between starting a shim and recording the container leaves a shim and
//! container the next agent does not know: its start of the same attempt removes that
//! container, waits for its shim to go, and removes the bundle (rootfs mount included) and the
//! attempt's log before making them again ([`clear_stale`], [`start`]). Not done:
//! log rotation (kubelet's `containerLogMaxSize`); a log grows until the container attempt's
//! directory goes with the pod. `stdinOnce` for a TTY container (upstream closes the
//! terminal's input; here it stays open).

use std::ffi::OsStr;
use std::io::{self, Write as _};
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{Mutex, mpsc, oneshot};

use kinetic_api::timeline::CpuTime;

use crate::runtime::{Exit, Kind, alive};
use crate::{Error, Result};

/// The hidden subcommand of the `kinetic` binary that runs a shim.
pub const SUBCOMMAND: &str = "__shim";

const SHIM_PID: &str = "shim.pid";
const PID: &str = "pid";
const EXIT: &str = "exit";
const ATTACH: &str = "attach.sock";
const CONSOLE: &str = "console.sock";

/// What one shim runs, passed as JSON in its argument.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// Which runtime creates the container (runc for a spec of an older agent).
    #[serde(default)]
    pub runtime: Kind,
    pub runc: PathBuf,
    /// The runtime's state root.
    pub root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub log: PathBuf,
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdin_once: bool,
    #[serde(default)]
    pub tty: bool,
}

/// Message kinds on the attach socket: `[kind][u32 length, big endian][payload]`.
pub(crate) mod wire {
    /// Client → shim: bytes for the container's stdin.
    pub const STDIN: u8 = 0;
    /// Shim → client: output.
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    /// Client → shim: the client's stdin ended.
    pub const CLOSE_STDIN: u8 = 3;
    /// Client → shim: terminal size, width then height, u16 big endian each.
    pub const RESIZE: u8 = 4;
    /// Both ways, first: JSON, the client's `{"stdin": bool}`, the shim's
    /// `{"stdin": bool, "tty": bool}`.
    pub const HELLO: u8 = 5;
}

/// Largest attach message accepted.
const MAX_MESSAGE: usize = 1 << 20;

pub(crate) async fn write_msg<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u8,
    data: &[u8],
) -> io::Result<()> {
    let mut b = Vec::with_capacity(5 + data.len());
    b.push(kind);
    b.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    b.extend_from_slice(data);
    w.write_all(&b).await?;
    w.flush().await
}

pub(crate) async fn read_msg<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "attach message too large"));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data).await?;
    Ok(Some((head[0], data)))
}

/// A path to `name` in `dir` short enough for a unix socket address, valid while `dir_fd`
/// stays open in process `pid`.
fn short_path(pid: i32, dir_fd: &OwnedFd, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/fd/{}/{name}", dir_fd.as_raw_fd()))
}

fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// Connects to the attach socket of the container whose bundle is `bundle`.
///
/// # Errors
/// There is no shim serving it (the container ended, or it was started without a shim).
pub(crate) async fn connect(bundle: &Path) -> io::Result<tokio::net::UnixStream> {
    let dir = open_dir(bundle)?;
    let me = rustix::process::getpid().as_raw_nonzero().get();
    tokio::net::UnixStream::connect(short_path(me, &dir, ATTACH)).await
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// True while `pid` is the shim of container `id` (not a reused pid): its arguments are
/// `__shim <spec of id>`, or `__shim - <id>` for a shim started ahead of its spec ([`Early`]).
fn is_shim(pid: i32, id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    alive(pid) && is_shim_cmdline(&cmdline, id)
}

fn is_shim_cmdline(cmdline: &[u8], id: &str) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let Some(sub) = args.iter().position(|a| *a == SUBCOMMAND.as_bytes()) else { return false };
    match (args.get(sub + 1), args.get(sub + 2)) {
        (Some(a), Some(b)) if *a == EARLY_ARG.as_bytes() => *b == id.as_bytes(),
        (Some(spec), _) => String::from_utf8_lossy(spec).contains(&format!("\"id\":\"{id}\"")),
        _ => false,
    }
}

/// The argument of a shim that reads its spec from stdin ([`Early`]).
const EARLY_ARG: &str = "-";

/// A shim started ahead of its container's spec (`__shim - <id>`), waiting for the spec on its
/// stdin. An in-place restart starts one as it stops the old run, so the shim's exec and
/// start-up overlap the old run's exit and the new run's preparation instead of following
/// them (issue 14). Dropped unused, its stdin closes and it exits without doing anything.
pub(crate) struct Early {
    id: String,
    child: tokio::process::Child,
}

impl Early {
    /// Starts `exe __shim - <id>` for container attempt `id`.
    ///
    /// # Errors
    /// The executable cannot be started.
    pub(crate) fn spawn(exe: &Path, id: &str) -> Result<Self> {
        let child = tokio::process::Command::new(exe)
            .arg(SUBCOMMAND)
            .arg(EARLY_ARG)
            .arg(id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io(exe, e))?;
        Ok(Self { id: id.to_owned(), child })
    }
}

/// The exit code the shim recorded in `bundle`, if any.
pub(crate) fn recorded_exit(bundle: &Path) -> Option<i32> {
    read_pid(&bundle.join(EXIT))
}

/// True when container `id` of `bundle` still has its shim, or its shim recorded how it ended
/// (an adopted container that exited while no agent ran).
pub(crate) fn known(bundle: &Path, id: &str) -> bool {
    recorded_exit(bundle).is_some()
        || read_pid(&bundle.join(SHIM_PID)).is_some_and(|p| is_shim(p, id))
}

/// Waits until container `id` (init process `pid`) has ended and returns its exit: the code its
/// shim recorded once the shim exits. A container started without a shim (by an older agent)
/// is waited for by its pid.
pub(crate) async fn wait_exit(bundle: &Path, id: &str, pid: i32) -> Exit {
    match read_pid(&bundle.join(SHIM_PID)).filter(|p| is_shim(*p, id)) {
        Some(shim) => {
            let _ = crate::runtime::wait_exit(shim).await;
        }
        None if recorded_exit(bundle).is_none() && alive(pid) => {
            return crate::runtime::wait_exit(pid).await;
        }
        None => {}
    }
    recorded_exit(bundle).map_or(Exit::Unknown, Exit::Code)
}

/// Starts container `spec.id` under a new shim (`exe __shim <spec>`) and returns the pid of the
/// container's init process once runc has started it, with the CPU time the shim, runc and
/// the container's init had used by then (the `agent_us` part is left to the caller).
///
/// # Errors
/// The shim cannot be started, or runc failed (its message is in the error).
pub(crate) async fn start(exe: &Path, spec: &Spec, early: Option<Early>) -> Result<(i32, CpuTime)> {
    let fail = |message: String| Error::Runtime {
        runtime: spec.runtime.as_str(),
        op: "run",
        id: spec.id.clone(),
        message,
    };
    // An attempt's log is its own: what an unrecorded run of it wrote is not this run's output.
    let _ = std::fs::remove_file(&spec.log);
    let arg =
        serde_json::to_string(spec).map_err(|e| fail(format!("encoding the shim spec: {e}")))?;
    let mut child = match hand_over(early, spec, &arg).await {
        Some(child) => child,
        None => tokio::process::Command::new(exe)
            .arg(SUBCOMMAND)
            .arg(&arg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io(exe, e))?,
    };
    let mut out = String::new();
    let read = match child.stdout.take() {
        Some(mut s) => {
            tokio::time::timeout(Duration::from_secs(120), s.read_to_string(&mut out)).await
        }
        None => Ok(Ok(0)),
    };
    if read.is_err() {
        let _ = child.start_kill();
        return Err(fail("the shim did not report within 120 s".into()));
    }
    // Never waited for or killed from here on: the shim outlives this agent.
    drop(child);
    let report: Value = serde_json::from_str(out.trim()).unwrap_or_default();
    if let Some(pid) = report.get("pid").and_then(Value::as_i64) {
        let pid = i32::try_from(pid).map_err(|_| fail(format!("bad pid {pid}")))?;
        let cpu = report
            .get("cpu")
            .and_then(|c| serde_json::from_value::<CpuTime>(c.clone()).ok())
            .unwrap_or_default();
        return Ok((pid, cpu));
    }
    Err(fail(
        report
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| format!("the shim exited without a report: {out:?}"), str::to_owned),
    ))
}

/// Gives `early` (when it is for `spec`'s container) its spec; `None` when there is no such
/// shim or it cannot take it (it is then left to exit on its closed stdin).
async fn hand_over(early: Option<Early>, spec: &Spec, arg: &str) -> Option<tokio::process::Child> {
    let mut early = early.filter(|e| e.id == spec.id)?;
    let mut stdin = early.child.stdin.take()?;
    let sent = stdin.write_all(arg.as_bytes()).await.and(stdin.shutdown().await);
    drop(stdin);
    match sent {
        Ok(()) => Some(early.child),
        Err(e) => {
            tracing::debug!(id = %spec.id, error = %e, "the early shim did not take its spec");
            None
        }
    }
}

/// Removes what a crash mid-create may have left of attempt `id` before it starts again, once
/// the runtime removed the container (`Runtime::clear_stale`): its shim (waited for: it
/// records the exit and goes) and the shim's files. The caller then unmounts and removes the
/// bundle. Nothing to do, and no process started, for a fresh attempt.
pub(crate) async fn clear_stale(id: &str, bundle: &Path) {
    if let Some(pid) = read_pid(&bundle.join(SHIM_PID)).filter(|p| is_shim(*p, id)) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(p) = rustix::process::Pid::from_raw(pid)
            && alive(pid)
        {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
    for f in [SHIM_PID, PID, EXIT, ATTACH, CONSOLE] {
        let _ = std::fs::remove_file(bundle.join(f));
    }
}

// ---------------------------------------------------------------------------------------------
// The shim process.

/// The shim's `main`: `arg` is the JSON [`Spec`]. Returns when the container has ended.
pub fn main(arg: &OsStr) -> ExitCode {
    let Some(rt) = prepare() else { return ExitCode::FAILURE };
    let spec = if arg == EARLY_ARG {
        // An early shim ([`Early`]): everything above is done while the agent still prepares
        // the container; the spec comes on stdin (to its end). Without one (the agent dropped
        // it) the shim exits quietly.
        use std::io::Read as _;
        let mut text = String::new();
        let read = io::stdin().read_to_string(&mut text);
        if let Ok(null) = std::fs::File::open("/dev/null") {
            let _ = rustix::stdio::dup2_stdin(&null);
        }
        if read.is_err() || text.trim().is_empty() {
            return ExitCode::FAILURE;
        }
        serde_json::from_str::<Spec>(&text).ok()
    } else {
        arg.to_str().and_then(|a| serde_json::from_str::<Spec>(a).ok())
    };
    let Some(spec) = spec else {
        report(&json!({"error": "the shim's argument is not a spec"}));
        return ExitCode::FAILURE;
    };
    let code = rt.block_on(run(spec));
    // Blocking reads (a terminal) may still be pending: do not wait for them.
    rt.shutdown_timeout(Duration::ZERO);
    code
}

/// What a shim does before it knows its container: a session of its own, the subreaper role,
/// its runtime. `None` (reported) when one fails.
fn prepare() -> Option<tokio::runtime::Runtime> {
    // A session of its own: no terminal's SIGINT or SIGHUP reaches it.
    let _ = rustix::process::setsid();
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        report(&json!({"error": format!("becoming the child subreaper: {e}")}));
        return None;
    }
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            report(&json!({"error": format!("starting the shim's runtime: {e}")}));
            None
        }
    }
}

/// Writes the one report line to the agent and detaches stdout from it.
fn report(v: &Value) {
    let mut out = io::stdout();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}

/// One read of output, or an attach client joining, or a flush request.
enum ToLog {
    Out(u8, Vec<u8>),
    Client(mpsc::Sender<(u8, Vec<u8>)>),
    Flush(oneshot::Sender<()>),
}

/// Where attach stdin goes.
enum StdinSink {
    Pipe(tokio::net::unix::pipe::Sender),
    Terminal(tokio::fs::File),
}

struct Shared {
    stdin: Mutex<Option<StdinSink>>,
    /// The terminal's primary side, for resizes.
    terminal: Option<OwnedFd>,
    spec: Spec,
}

async fn run(spec: Spec) -> ExitCode {
    match start_container(spec).await {
        Ok(code) => code,
        Err(msg) => {
            report(&json!({"error": msg}));
            ExitCode::FAILURE
        }
    }
}

/// Starts the container and serves it until it ends. `Err` is a failure before the report.
async fn start_container(spec: Spec) -> std::result::Result<ExitCode, String> {
    let bundle = spec.bundle.clone();
    let me = rustix::process::getpid().as_raw_nonzero().get();
    std::fs::write(bundle.join(SHIM_PID), me.to_string())
        .map_err(|e| format!("writing {}: {e}", bundle.join(SHIM_PID).display()))?;
    let dir = open_dir(&bundle).map_err(|e| format!("opening {}: {e}", bundle.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| format!("opening {}: {e}", spec.log.display()))?;
    let attach = tokio::net::UnixListener::bind(short_path(me, &dir, ATTACH))
        .map_err(|e| format!("binding the attach socket: {e}"))?;

    let (log_tx, log_rx) = mpsc::channel::<ToLog>(64);
    // runc's messages while it starts the container (its stderr is the container's).
    let capture = Arc::new(std::sync::Mutex::new(Some(Vec::<u8>::new())));
    let writer = tokio::spawn(write_log(log, log_rx, capture.clone()));

    let Started { pid, pumps, stdin_sink, terminal, runtime_cpu } = match spec.runtime {
        Kind::Runc => spawn_runc(&spec, me, &dir, &log_tx, &capture).await?,
        Kind::Native => spawn_native(&spec, &log_tx)?,
    };
    if let Ok(mut c) = capture.lock() {
        // From here on stderr is the container's, not the runtime's.
        *c = None;
    }
    let shared = Arc::new(Shared { stdin: Mutex::new(stdin_sink), terminal, spec });
    let server = tokio::spawn(serve_attach(attach, shared.clone(), log_tx.clone()));
    // The container's init: runc's last `runc init` stage up to its exec of the entrypoint,
    // and the entrypoint's first instants. The shim: everything from its exec until now.
    let init_cpu = kinetic_sys::process_cpu(pid).unwrap_or_default();
    let shim_cpu = kinetic_sys::process_cpu(me).unwrap_or_default();
    let cpu = CpuTime {
        shim_us: crate::cpu::micros(shim_cpu),
        runc_us: crate::cpu::micros(runtime_cpu),
        init_us: crate::cpu::micros(init_cpu),
        ..Default::default()
    };
    report(&json!({"pid": pid, "cpu": cpu}));

    let exit = crate::runtime::wait_exit(pid).await;
    // The container's processes are gone with its init (its own pid namespace): the pipes end.
    let drain = futures::future::join_all(pumps);
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    flush(&log_tx).await;
    server.abort();
    let _ = std::fs::remove_file(bundle.join(ATTACH));
    if let Exit::Code(code) = exit {
        let tmp = bundle.join("exit.tmp");
        if std::fs::write(&tmp, code.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, bundle.join(EXIT));
        }
    }
    drop(log_tx);
    writer.abort();
    Ok(ExitCode::SUCCESS)
}

/// What a started container hands the shim: its init, the output pumps, where attach stdin
/// goes, the terminal's primary side, and the CPU of the runtime's own processes.
struct Started {
    pid: i32,
    pumps: Vec<tokio::task::JoinHandle<()>>,
    stdin_sink: Option<StdinSink>,
    terminal: Option<OwnedFd>,
    runtime_cpu: Duration,
}

/// `runc run -d` with pipes or a console socket as the container's stdio.
async fn spawn_runc(
    spec: &Spec,
    me: i32,
    dir: &OwnedFd,
    log_tx: &mpsc::Sender<ToLog>,
    capture: &Arc<std::sync::Mutex<Option<Vec<u8>>>>,
) -> std::result::Result<Started, String> {
    let bundle = spec.bundle.clone();
    let mut cmd = tokio::process::Command::new(&spec.runc);
    cmd.arg("--root").arg(&spec.root).arg("run").arg("-d").arg("--pid-file").arg(bundle.join(PID));
    let mut pumps = Vec::new();
    let mut stdin_sink = None;
    let mut console = None;
    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| format!("making a pipe: {e}"))
    };
    if spec.tty {
        let path = short_path(me, dir, CONSOLE);
        let l = std::os::unix::net::UnixListener::bind(&path)
            .map_err(|e| format!("binding the console socket: {e}"))?;
        cmd.arg("--console-socket").arg(&path);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        console = Some(l);
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
        for (fd, stream) in [(out_r, wire::STDOUT), (err_r, wire::STDERR)] {
            let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map_err(|e| format!("reading a pipe: {e}"))?;
            pumps.push(tokio::spawn(pump(rx, stream, log_tx.clone())));
        }
        if spec.stdin {
            let (in_r, in_w) = pipe()?;
            cmd.stdin(Stdio::from(in_r));
            stdin_sink = Some(StdinSink::Pipe(
                tokio::net::unix::pipe::Sender::from_owned_fd(in_w)
                    .map_err(|e| format!("writing a pipe: {e}"))?,
            ));
        } else {
            cmd.stdin(Stdio::null());
        }
    }
    cmd.arg("-b").arg(&bundle).arg(&spec.id);
    let mut child = cmd.spawn().map_err(|e| format!("starting {}: {e}", spec.runc.display()))?;
    // The child has its copies of the pipes' other ends; ours must go, or no end of file.
    drop(cmd);
    let mut runc_err = String::new();
    let mut terminal = None;
    if let Some(l) = console {
        let mut err = child.stderr.take();
        let mut recv = tokio::task::spawn_blocking(move || receive_terminal(&l));
        let received = tokio::select! {
            biased;
            r = &mut recv => Some(r),
            _ = child.wait() => None,
        };
        // runc hands the terminal over before it exits; should both be seen at once, the
        // terminal is still there to take.
        let received = match received {
            Some(r) => Some(r),
            None => tokio::time::timeout(Duration::from_millis(100), recv).await.ok(),
        };
        if let Some(r) = received {
            let fd = r
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("receiving the terminal: {e}"))?;
            terminal = Some(fd);
        }
        let _ = std::fs::remove_file(bundle.join(CONSOLE));
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut runc_err).await;
        }
    }
    if let Some(t) = &terminal {
        stdin_sink = relay_terminal(t, spec.stdin, &mut pumps, log_tx)?.or(stdin_sink);
    }
    let status = child.wait().await.map_err(|e| format!("waiting for runc: {e}"))?;
    // runc was this process's only child so far: the reaped children's CPU is its own and that
    // of the `runc init` stages it reaped.
    let runtime_cpu = kinetic_sys::children_cpu();
    let pid = read_pid(&bundle.join(PID));
    let pid = match (status.success(), pid) {
        (true, Some(pid)) => pid,
        _ => {
            // runc's own message went to its stderr: the container's stderr pipe (in the log
            // as well, as a failed start's output) or, with a terminal, our pipe.
            let drain = futures::future::join_all(pumps);
            let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
            flush(log_tx).await;
            let captured = capture.lock().ok().and_then(|c| c.clone()).unwrap_or_default();
            let mut msg = runc_err;
            msg.push_str(&String::from_utf8_lossy(&captured));
            let msg = msg.trim();
            let _ = std::fs::remove_file(bundle.join(ATTACH));
            return Err(if msg.is_empty() {
                format!("runc exited with {status}")
            } else {
                msg.to_owned()
            });
        }
    };
    Ok(Started { pid, pumps, stdin_sink, terminal, runtime_cpu })
}

/// The native runtime's create, in this process (single-threaded so far), with pipes or a
/// new terminal as the container's stdio.
fn spawn_native(spec: &Spec, log_tx: &mpsc::Sender<ToLog>) -> std::result::Result<Started, String> {
    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| format!("making a pipe: {e}"))
    };
    let null = || {
        std::fs::File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| format!("opening /dev/null: {e}"))
    };
    let mut pumps = Vec::new();
    let mut stdin_sink = None;
    let mut terminal = None;
    let stdio = if spec.tty {
        use rustix::pty::OpenptFlags;
        let primary =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
                .map_err(|e| format!("opening a terminal: {e}"))?;
        rustix::pty::grantpt(&primary).map_err(|e| format!("opening a terminal: {e}"))?;
        rustix::pty::unlockpt(&primary).map_err(|e| format!("opening a terminal: {e}"))?;
        let name = rustix::pty::ptsname(&primary, Vec::new())
            .map_err(|e| format!("opening a terminal: {e}"))?;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(name.as_bytes()));
        let replica: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?
            .into();
        let dup =
            |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("duplicating the terminal: {e}"));
        let s = crate::runtime::native::Stdio {
            stdin: dup(&replica)?,
            stdout: dup(&replica)?,
            stderr: replica,
            console: Some(path),
        };
        terminal = Some(primary);
        s
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        for (fd, stream) in [(out_r, wire::STDOUT), (err_r, wire::STDERR)] {
            let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map_err(|e| format!("reading a pipe: {e}"))?;
            pumps.push(tokio::spawn(pump(rx, stream, log_tx.clone())));
        }
        let stdin = if spec.stdin {
            let (in_r, in_w) = pipe()?;
            stdin_sink = Some(StdinSink::Pipe(
                tokio::net::unix::pipe::Sender::from_owned_fd(in_w)
                    .map_err(|e| format!("writing a pipe: {e}"))?,
            ));
            in_r
        } else {
            null()?
        };
        crate::runtime::native::Stdio { stdin, stdout: out_w, stderr: err_w, console: None }
    };
    let pid = crate::runtime::native::create(&spec.root, &spec.id, &spec.bundle, stdio)?;
    if let Some(t) = &terminal {
        stdin_sink = relay_terminal(t, spec.stdin, &mut pumps, log_tx)?.or(stdin_sink);
    }
    Ok(Started { pid, pumps, stdin_sink, terminal, runtime_cpu: Duration::ZERO })
}

async fn flush(log_tx: &mpsc::Sender<ToLog>) {
    let (tx, rx) = oneshot::channel();
    if log_tx.send(ToLog::Flush(tx)).await.is_ok() {
        let _ = rx.await;
    }
}

/// Accepts runc's connection on the console socket and receives the terminal's primary side.
fn receive_terminal(l: &std::os::unix::net::UnixListener) -> io::Result<OwnedFd> {
    use std::mem::MaybeUninit;

    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let (conn, _) = l.accept()?;
    let mut name = [0u8; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    rustix::net::recvmsg(
        conn.as_fd(),
        &mut [io::IoSliceMut::new(&mut name)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(io::Error::other("runc sent no terminal"))
}

/// Copies output to the log writer until end of file (or EIO: a terminal whose other side
/// closed).
/// Relays a container's terminal: its output to the log (as stdout), and, when the container
/// takes stdin, the sink attach writes to.
fn relay_terminal(
    t: &OwnedFd,
    stdin: bool,
    pumps: &mut Vec<tokio::task::JoinHandle<()>>,
    log_tx: &mpsc::Sender<ToLog>,
) -> std::result::Result<Option<StdinSink>, String> {
    let dup = || t.try_clone().map_err(|e| format!("duplicating the terminal: {e}"));
    let file = |fd: OwnedFd| tokio::fs::File::from_std(std::fs::File::from(fd));
    pumps.push(tokio::spawn(pump(file(dup()?), wire::STDOUT, log_tx.clone())));
    Ok(if stdin { Some(StdinSink::Terminal(file(dup()?))) } else { None })
}

async fn pump<R: AsyncRead + Unpin>(mut r: R, stream: u8, tx: mpsc::Sender<ToLog>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(ToLog::Out(stream, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The CRI log records of one chunk of output: a record per line, `F` for a line that ends in
/// the chunk and `P` for the rest of a chunk that ends mid-line.
pub(crate) fn encode(ts: &str, stream: u8, data: &[u8], out: &mut Vec<u8>) {
    let name: &[u8] = if stream == wire::STDERR { b"stderr" } else { b"stdout" };
    let mut rest = data;
    while !rest.is_empty() {
        let (line, tag, next) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], b'F', &rest[i + 1..]),
            None => (rest, b'P', &rest[rest.len()..]),
        };
        out.extend_from_slice(ts.as_bytes());
        out.push(b' ');
        out.extend_from_slice(name);
        out.push(b' ');
        out.push(tag);
        out.push(b' ');
        out.extend_from_slice(line);
        out.push(b'\n');
        rest = next;
    }
}

/// A timestamp as kubelet writes them (`RFC3339Nano`, fixed to nine digits).
pub(crate) fn now() -> String {
    format!("{:.9}", jiff::Timestamp::now())
}

/// Writes output to the log (in arrival order, so timestamps never go back) and to the
/// attached clients. A client that does not keep up is dropped rather than slowing the
/// container down.
async fn write_log(
    mut log: std::fs::File,
    mut rx: mpsc::Receiver<ToLog>,
    capture: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
) {
    let mut clients: Vec<mpsc::Sender<(u8, Vec<u8>)>> = Vec::new();
    let mut buf = Vec::new();
    while let Some(m) = rx.recv().await {
        match m {
            ToLog::Out(stream, data) => {
                buf.clear();
                encode(&now(), stream, &data, &mut buf);
                // A failed write has nobody to report to: the output is dropped and attach
                // goes on (kubelet's runtimes drop it too when the log cannot be written).
                let _ = log.write_all(&buf);
                if stream == wire::STDERR
                    && let Ok(mut c) = capture.lock()
                    && let Some(c) = c.as_mut()
                    && c.len() < 4096
                {
                    c.extend_from_slice(&data);
                }
                clients.retain(|c| c.try_send((stream, data.clone())).is_ok());
            }
            ToLog::Client(c) => clients.push(c),
            ToLog::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

async fn serve_attach(
    listener: tokio::net::UnixListener,
    shared: Arc<Shared>,
    log_tx: mpsc::Sender<ToLog>,
) {
    loop {
        let Ok((conn, _)) = listener.accept().await else { continue };
        tokio::spawn(attach_client(conn, shared.clone(), log_tx.clone()));
    }
}

async fn attach_client(
    conn: tokio::net::UnixStream,
    shared: Arc<Shared>,
    log_tx: mpsc::Sender<ToLog>,
) {
    let (mut r, mut w) = conn.into_split();
    let hello = json!({"stdin": shared.spec.stdin, "tty": shared.spec.tty}).to_string();
    if write_msg(&mut w, wire::HELLO, hello.as_bytes()).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<(u8, Vec<u8>)>(256);
    if log_tx.send(ToLog::Client(tx)).await.is_err() {
        return;
    }
    let out = tokio::spawn(async move {
        while let Some((stream, data)) = rx.recv().await {
            if write_msg(&mut w, stream, &data).await.is_err() {
                return;
            }
        }
    });
    let mut wants_stdin = false;
    while let Ok(Some((kind, data))) = read_msg(&mut r).await {
        match kind {
            wire::HELLO => {
                let v: Value = serde_json::from_slice(&data).unwrap_or_default();
                wants_stdin = v.get("stdin").and_then(Value::as_bool).unwrap_or(false);
            }
            wire::STDIN => {
                let mut sink = shared.stdin.lock().await;
                let ok = match sink.as_mut() {
                    Some(StdinSink::Pipe(p)) => p.write_all(&data).await.is_ok(),
                    Some(StdinSink::Terminal(t)) => {
                        t.write_all(&data).await.is_ok() && t.flush().await.is_ok()
                    }
                    None => true,
                };
                if !ok {
                    *sink = None;
                }
            }
            wire::CLOSE_STDIN if shared.spec.stdin_once => close_stdin(&shared).await,
            wire::RESIZE if data.len() == 4 => {
                let width = u16::from_be_bytes([data[0], data[1]]);
                let height = u16::from_be_bytes([data[2], data[3]]);
                if let Some(t) = &shared.terminal {
                    let ws = rustix::termios::Winsize {
                        ws_row: height,
                        ws_col: width,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    let _ = rustix::termios::tcsetwinsize(t, ws);
                }
            }
            _ => {}
        }
    }
    // kubelet's stdinOnce: the container's stdin closes when the first attach that used it
    // ends.
    if wants_stdin && shared.spec.stdin_once {
        close_stdin(&shared).await;
    }
    out.abort();
}

/// Ends the container's stdin (not a terminal's: closing the primary side would hang it up).
async fn close_stdin(shared: &Shared) {
    let mut sink = shared.stdin.lock().await;
    if matches!(*sink, Some(StdinSink::Pipe(_))) {
        *sink = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shim_is_known_by_its_spec_or_by_its_early_arguments() {
        let spec = br#"{"runtime":"native","id":"u-web-2","bundle":"/b"}"#;
        let mut full = b"/usr/bin/kinetic\0__shim\0".to_vec();
        full.extend_from_slice(spec);
        full.push(0);
        let cases: [(&[u8], &str, bool); 7] = [
            (&full, "u-web-2", true),
            (&full, "u-web-3", false),
            (b"/usr/bin/kinetic\0__shim\0-\0u-web-2\0", "u-web-2", true),
            // An early shim of another attempt, or an id only as a prefix.
            (b"/usr/bin/kinetic\0__shim\0-\0u-web-3\0", "u-web-2", false),
            (b"/usr/bin/kinetic\0__shim\0-\0u-web-22\0", "u-web-2", false),
            // Not a shim at all, or a shim with nothing to say who it is.
            (b"/bin/sleep\0u-web-2\0", "u-web-2", false),
            (b"/usr/bin/kinetic\0__shim\0", "u-web-2", false),
        ];
        for (cmdline, id, want) in cases {
            assert_eq!(is_shim_cmdline(cmdline, id), want, "{}", String::from_utf8_lossy(cmdline));
        }
    }

    #[test]
    fn output_becomes_cri_records() {
        let mut out = Vec::new();
        encode("T", wire::STDOUT, b"a\nb\n", &mut out);
        encode("T", wire::STDERR, b"half", &mut out);
        encode("T", wire::STDOUT, b"\n", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "T stdout F a\nT stdout F b\nT stderr P half\nT stdout F \n"
        );
    }

    #[test]
    fn timestamps_have_nine_digits() {
        let t = now();
        assert_eq!(t.len(), "2026-12-06T22:00:00.123456789Z".len(), "{t}");
        assert!(t.ends_with('Z'));
        assert!(t.parse::<jiff::Timestamp>().is_ok());
    }

    #[tokio::test]
    async fn attach_messages_round_trip() {
        let mut b = Vec::new();
        write_msg(&mut b, wire::RESIZE, &[0, 80, 0, 24]).await.unwrap();
        write_msg(&mut b, wire::STDIN, b"").await.unwrap();
        let mut r = b.as_slice();
        assert_eq!(read_msg(&mut r).await.unwrap(), Some((wire::RESIZE, vec![0, 80, 0, 24])));
        assert_eq!(read_msg(&mut r).await.unwrap(), Some((wire::STDIN, vec![])));
        assert_eq!(read_msg(&mut r).await.unwrap(), None);
    }
}
