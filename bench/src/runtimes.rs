//! A service run on a runtime of its own whose threads carry its name, as if it were its own
//! process: the CPU time it uses is then told apart from the bench client's and the local
//! upstream's (which share the bench's own runtime).

use std::sync::OnceLock;
use std::time::Duration;

/// The name of the service's threads.
pub const SERVICE: &str = "bench-service";
/// The runtime whose threads are named [`SERVICE`]: two worker threads, as many as the machine
/// has cores, as the local server's own runtime would have.
pub fn service_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(SERVICE)
            .enable_all()
            .build()
            .expect("a runtime for the bench")
    })
}

/// The CPU time the threads of this process named `name` have used so far, or (`None`) all of
/// its threads: the sum of their run times in `/proc/self/task/*/schedstat`.
pub fn cpu_time_of(name: Option<&str>) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter(|t| {
            name.is_none_or(|n| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == n)
            })
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}
