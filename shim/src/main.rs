//! `palisade-stdio-shim`: runs a stdio MCP server in a container of its own and serves its stdin
//! and stdout on a Unix socket, so that `palisade-server --upstream-socket` in another container
//! of the same pod can stand in front of it.
//!
//! Why a shim rather than the server running the upstream as its child: containers of a pod have
//! separate mounts, so the upstream's container holds none of the server's keys, tokens or policy
//! (an upstream run by the server, as the same user, could read the HMAC key and mint tokens),
//! and the user's image needs no glibc of ours: the shim is built statically.
//!
//! ```text
//! palisade-stdio-shim install DIR
//!     copies this binary to DIR/palisade-stdio-shim (an init container's step: distroless
//!     images have no cp)
//! palisade-stdio-shim run --socket PATH -- COMMAND [ARG...]
//!     listens on PATH (mode 0660); for each connection, one at a time, starts COMMAND in a
//!     process group of its own and joins the connection to its stdin and stdout (its stderr is
//!     the container's log); when either side ends, the group is stopped (SIGTERM, SIGKILL after
//!     5 s) and the next connection gets a new process
//! ```
//!
//! As a container's first process it also reaps orphans, and on SIGTERM or SIGINT stops the
//! running process group and exits 0.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions, kill_process_group};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::Command;
use tokio::signal::unix::{Signal as Listener, SignalKind, signal};

/// The file name `install` writes.
const NAME: &str = "palisade-stdio-shim";
/// How long a process group has to end after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(5);

const USAGE: &str =
    "usage: palisade-stdio-shim install DIR\n       palisade-stdio-shim run --socket PATH -- COMMAND [ARG...]";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Install(PathBuf),
    Run { socket: PathBuf, command: Vec<OsString> },
}

/// The mode of `args` (without the program name), or what is wrong with them.
fn parse(args: &[OsString]) -> Result<Mode, String> {
    match args.first().and_then(|a| a.to_str()) {
        Some("install") => match &args[1..] {
            [dir] => Ok(Mode::Install(PathBuf::from(dir))),
            _ => Err("install takes one directory".into()),
        },
        Some("run") => {
            let rest = &args[1..];
            let (socket, command) = match rest {
                [flag, socket, dash, command @ ..] if flag == "--socket" && dash == "--" => (socket, command),
                _ => return Err("run takes --socket PATH -- COMMAND [ARG...]".into()),
            };
            if command.is_empty() {
                return Err("run needs a COMMAND after --".into());
            }
            Ok(Mode::Run {
                socket: PathBuf::from(socket),
                command: command.to_vec(),
            })
        }
        _ => Err("expected install or run".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let outcome = match parse(&args) {
        Ok(Mode::Install(dir)) => install(&dir),
        Ok(Mode::Run { socket, command }) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start: {e}"))
            .and_then(|runtime| runtime.block_on(run(&socket, &command))),
        Err(message) => {
            eprintln!("{NAME}: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{NAME}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn install(dir: &Path) -> Result<(), String> {
    let target = dir.join(NAME);
    std::fs::copy("/proc/self/exe", &target).map_err(|e| format!("cannot copy itself to {}: {e}", target.display()))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot make {} executable: {e}", target.display()))?;
    eprintln!("{NAME}: installed {}", target.display());
    Ok(())
}

async fn run(socket: &Path, command: &[OsString]) -> Result<(), String> {
    if std::fs::symlink_metadata(socket).is_ok() {
        std::fs::remove_file(socket).map_err(|e| format!("cannot remove the old {}: {e}", socket.display()))?;
    }
    let listener = UnixListener::bind(socket).map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot set the mode of {}: {e}", socket.display()))?;
    let mut stop = Stops {
        term: listen(SignalKind::terminate())?,
        interrupt: listen(SignalKind::interrupt())?,
    };
    let mut ended = listen(SignalKind::child())?;
    eprintln!("{NAME}: listening on {}", socket.display());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted.map_err(|e| format!("cannot accept: {e}"))?;
                let stopped = serve(stream, command, &mut stop).await;
                reap_orphans();
                if stopped {
                    return Ok(());
                }
            }
            _ = stop.recv() => return Ok(()),
            _ = ended.recv() => reap_orphans(),
        }
    }
}

fn listen(kind: SignalKind) -> Result<Listener, String> {
    signal(kind).map_err(|e| format!("cannot handle signals: {e}"))
}

/// The signals that stop the shim.
struct Stops {
    term: Listener,
    interrupt: Listener,
}

impl Stops {
    /// Waits for SIGTERM or SIGINT.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Runs `command` for one connection until either side ends; whether the shim was told to stop.
async fn serve(stream: UnixStream, command: &[OsString], stop: &mut Stops) -> bool {
    let mut child = match Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            // The connection closes: palisade-server reports the upstream unavailable and tries
            // again with back-off.
            eprintln!("{NAME}: cannot start {:?}: {error}", command[0]);
            return false;
        }
    };
    let group = child.id().and_then(|id| i32::try_from(id).ok()).and_then(Pid::from_raw);
    eprintln!("{NAME}: started {:?} (process group {:?})", command[0], child.id());
    let (mut stdin, mut stdout) = (child.stdin.take(), child.stdout.take());
    let (mut from_socket, mut to_socket) = stream.into_split();
    let stopped = tokio::select! {
        _ = async { if let Some(stdin) = stdin.as_mut() { let _ = tokio::io::copy(&mut from_socket, stdin).await; } } => false,
        _ = async { if let Some(stdout) = stdout.as_mut() { let _ = tokio::io::copy(stdout, &mut to_socket).await; } } => false,
        _ = stop.recv() => true,
    };
    drop((stdin, stdout, from_socket, to_socket));
    if let Some(group) = group {
        let _ = kill_process_group(group, Signal::TERM);
        if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
            let _ = kill_process_group(group, Signal::KILL);
        }
    }
    // Reaped here, or by reap_orphans (then wait reports an error, which says nothing new).
    let _ = child.wait().await;
    eprintln!("{NAME}: the connection ended; the process group is stopped");
    stopped
}

/// Reaps every child that has ended: as a container's first process, orphans are the shim's.
fn reap_orphans() {
    while let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &[&str]) -> Vec<OsString> {
        text.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_command_line_is_install_dir_or_run_socket_then_the_command() {
        assert_eq!(
            parse(&args(&["install", "/palisade/bin"])),
            Ok(Mode::Install("/palisade/bin".into()))
        );
        assert_eq!(
            parse(&args(&["run", "--socket", "/run/up.sock", "--", "npx", "-y", "server"])),
            Ok(Mode::Run {
                socket: "/run/up.sock".into(),
                command: args(&["npx", "-y", "server"]),
            })
        );
        for bad in [
            &["run", "--socket", "/s", "--"][..],
            &["run", "--socket", "/s", "npx"],
            &["run", "npx"],
            &["install"],
            &["serve"],
            &[],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
