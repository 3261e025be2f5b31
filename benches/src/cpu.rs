//! CPU time of processes, from `/proc/<pid>/stat`: what a push costs the server (and the load
//! generator) independently of how fast a noisy, shared machine happened to be during the run.

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// User plus system CPU time from the text of a `/proc/<pid>/stat` file, in clock ticks. The
/// command name (field 2) may hold spaces and parentheses, so fields are counted after its last ')'.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time (user + system, all threads, exited ones included) of process `pid`; `"self"` is this
/// process.
pub fn process_cpu(pid: &str) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat"),
        )
    })?;
    let tps = ticks_per_second();
    Ok(
        Duration::from_secs(ticks / tps)
            + Duration::from_nanos((ticks % tps) * 1_000_000_000 / tps),
    )
}

/// Summed CPU time of several processes.
pub fn total_cpu(pids: &[u32]) -> io::Result<Duration> {
    pids.iter()
        .map(|pid| process_cpu(&pid.to_string()))
        .sum::<io::Result<Duration>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194304 1234 0 0 0 250 70 0 0 20 0 3 0 99 1000 200";
        assert_eq!(parse_stat_ticks(stat), Some(320));
        assert_eq!(parse_stat_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        let before = process_cpu("self").unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(150) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = process_cpu("self").unwrap();
        assert!(after > before, "{before:?} -> {after:?}");
        assert!(total_cpu(&[std::process::id()]).unwrap() >= after);
    }
}
