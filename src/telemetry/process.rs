//! `process_*` metrics of the running process, read from /proc (Linux only; elsewhere the
//! families are simply absent).

use std::fs;

/// Values of the process collector, each `None` when unavailable.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub start_time: Option<f64>,
    pub virtual_max_bytes: Option<f64>,
}

/// Clock ticks per second of /proc/<pid>/stat times; 100 on every Linux we run on.
const TICKS_PER_SECOND: f64 = 100.0;
const PAGE_SIZE: f64 = 4096.0;

pub fn read() -> ProcessStats {
    let mut s = ProcessStats::default();
    if let Ok(stat) = fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name, which may itself contain spaces.
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            // rest[0] is field 3 (state): utime=14, stime=15, starttime=22, vsize=23, rss=24.
            let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
            if let (Some(u), Some(st)) = (field(14), field(15)) {
                s.cpu_seconds = Some((u + st) / TICKS_PER_SECOND);
            }
            s.virtual_bytes = field(23);
            s.resident_bytes = field(24).map(|p| p * PAGE_SIZE);
            if let (Some(start), Some(boot)) = (field(22), boot_time()) {
                s.start_time = Some(boot + start / TICKS_PER_SECOND);
            }
        }
    }
    if let Ok(dir) = fs::read_dir("/proc/self/fd") {
        s.open_fds = Some(dir.count() as f64);
    }
    if let Ok(limits) = fs::read_to_string("/proc/self/limits") {
        for line in limits.lines() {
            let value = |l: &str| {
                l.split_whitespace().nth(3).map(|v| {
                    if v == "unlimited" {
                        -1.0
                    } else {
                        v.parse().unwrap_or(-1.0)
                    }
                })
            };
            if line.starts_with("Max open files") {
                s.max_fds = value(line);
            } else if line.starts_with("Max address space") {
                s.virtual_max_bytes = value(line);
            }
        }
    }
    s
}

fn boot_time() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_process() {
        let s = super::read();
        if cfg!(target_os = "linux") {
            assert!(s.resident_bytes.unwrap_or(0.0) > 0.0);
            assert!(s.open_fds.unwrap_or(0.0) >= 1.0);
            assert!(s.start_time.unwrap_or(0.0) > 1.0e9);
        }
    }
}
