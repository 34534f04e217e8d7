//! Server processes the bench starts and measures: ports, readiness, resident memory, and
//! where the peers' binaries are.

use std::path::PathBuf;
use std::time::Duration;

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))
}

/// Clock ticks per second of /proc's times (USER_HZ on Linux).
pub const TICKS_PER_S: f64 = 100.0;

/// A process's user and system time so far, in clock ticks.
pub fn process_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let tick = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc stat"))?
            .parse()?)
    };
    Ok(tick(11)? + tick(12)?)
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until something accepts TCP connections on the loopback port (at most 30 s).
pub async fn wait_listening(port: u16) -> anyhow::Result<()> {
    for _ in 0..1500 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("nothing listens on 127.0.0.1:{port} after 30 s")
}

/// A tool installed by `scripts/install-deps bench`: `$NATTER_<NAME>` if set, else the
/// repository's `.tools/bin/<name>`, else `<name>` on the PATH.
pub fn tool(name: &str) -> PathBuf {
    let var = format!("NATTER_{}", name.to_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(var) {
        return path.into();
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools/bin")
        .join(name);
    if local.exists() {
        return local;
    }
    PathBuf::from(name)
}
