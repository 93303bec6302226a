//! What the kernel says about a process: resident memory, CPU time, limits, load.
//!
//! Everything is read from `/proc` (Linux), so the bench needs neither `libc` nor unsafe
//! code. `pid = None` means this process.

use anyhow::Context;
use std::sync::OnceLock;

fn proc_path(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

/// A `kB` field of `/proc/PID/status` (like `VmRSS` or `VmHWM`), in bytes.
pub fn status_bytes(pid: Option<u32>, field: &str) -> anyhow::Result<u64> {
    let path = proc_path(pid, "status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            let kib: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("cannot parse {field} in {path}: {line:?}"))?;
            return Ok(kib * 1024);
        }
    }
    anyhow::bail!("{path} has no {field} line")
}

/// Resident memory (`VmRSS`), in bytes.
pub fn rss_bytes(pid: Option<u32>) -> anyhow::Result<u64> {
    status_bytes(pid, "VmRSS")
}

/// Bytes the process has read through system calls so far (`rchar` of `/proc/PID/io`,
/// page-cache hits included).
pub fn read_chars(pid: Option<u32>) -> anyhow::Result<u64> {
    let path = proc_path(pid, "io");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{path} has no rchar line"))
}

/// Clock ticks per second for `/proc/PID/stat` times (`getconf CLK_TCK`, else 100).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// User plus system CPU time the process has used, in seconds.
pub fn cpu_seconds(pid: Option<u32>) -> anyhow::Result<f64> {
    let path = proc_path(pid, "stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("unexpected {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .with_context(|| format!("unexpected {path}"))
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

/// This process's soft limit on open files, when `/proc/self/limits` states one.
pub fn open_files_soft_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Number of CPUs this process may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
