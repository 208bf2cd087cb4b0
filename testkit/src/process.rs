//! Child processes for end-to-end tests: killed with all their descendants when dropped, output kept in a file outside the source tree.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr going to a temporary log file.
    pub fn spawn(mut cmd: Command, name: &str) -> Self {
        let log =
            std::env::temp_dir().join(format!("{name}-{}.log", uuid::Uuid::now_v7().simple()));
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit by itself; its exit code (`None`: still
    /// running, or ended by a signal).
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// What the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the process and every process it started (some start their own sessions, as
    /// `cargo lambda watch` does for each function), then waits for it.
    pub fn stop(&mut self) {
        let mut pids = descendants(self.child.id());
        pids.push(self.child.id());
        signal(&pids, "TERM");
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal(&pids, "KILL");
        let _ = self.child.wait();
    }
}

fn signal(pids: &[u32], sig: &str) {
    let mut cmd = Command::new("kill");
    cmd.arg("-s").arg(sig).arg("--");
    cmd.args(pids.iter().map(u32::to_string));
    let _ = cmd.stderr(Stdio::null()).status();
}

/// Every live descendant of `pid`, read from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(cur) = frontier.pop() {
        for (p, pp) in &parents {
            if *pp == cur && !out.contains(p) {
                out.push(*p);
                frontier.push(*p);
            }
        }
    }
    out
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `url` until it answers 200 or `limit` passes; panics with `context()` then.
pub async fn wait_ok(
    http: &reqwest::Client,
    url: &str,
    limit: Duration,
    context: impl Fn() -> String,
) {
    let until = Instant::now() + limit;
    loop {
        let attempt = http.get(url).timeout(Duration::from_secs(20)).send().await;
        if attempt.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(
            Instant::now() < until,
            "{url} did not answer 200 within {limit:?}:\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Starts a service binary's `serve` (the local server) on a free port with `env` (and without
/// the caller's `DATABASE_URL`), and waits for `/health` to answer 200. Returns the process and
/// its base URL.
pub async fn serve(bin: &str, name: &str, env: &[(&str, &str)]) -> (Proc, String) {
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .env_remove("DATABASE_URL")
        .env_remove("LOG_FORMAT")
        .env("PORT", port.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let proc = Proc::spawn(cmd, name);
    let base = format!("http://127.0.0.1:{port}");
    wait_ok(
        &crate::http_client(),
        &format!("{base}/health"),
        Duration::from_secs(30),
        || proc.output(),
    )
    .await;
    (proc, base)
}
