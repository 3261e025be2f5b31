//! Reading what a scrape returned: series counts and the server's resident memory.

use std::io;

/// Series in a text-format scrape: non-empty lines that are not comments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeriesCount {
    pub total: u64,
    /// Series whose line contains the marker, e.g. `job="loadgen"`.
    pub marked: u64,
}

/// Counts series lines in a text-format body.
pub fn count_series(body: &[u8], marker: &[u8]) -> SeriesCount {
    let mut count = SeriesCount::default();
    for line in body.split(|&b| b == b'\n') {
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        count.total += 1;
        if !marker.is_empty() && line.windows(marker.len()).any(|w| w == marker) {
            count.marked += 1;
        }
    }
    count
}

/// `process_resident_memory_bytes` as the server itself reports it, if the scrape has it.
pub fn resident_memory_from_scrape(body: &[u8]) -> Option<u64> {
    const NAME: &[u8] = b"process_resident_memory_bytes ";
    body.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(NAME))
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}

/// Resident memory of process `pid` from `/proc/<pid>/status` (`VmRSS`, reported in kB).
pub fn vm_rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line in status"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &[u8] =
        b"# HELP a help\n# TYPE a counter\na{job=\"loadgen\",instance=\"i1\"} 1\n\
        a{job=\"other\"} 2\nprocess_resident_memory_bytes 2.21184e+08\n";

    #[test]
    fn counts_series_and_marked_series() {
        let count = count_series(SCRAPE, br#"job="loadgen""#);
        assert_eq!(
            count,
            SeriesCount {
                total: 3,
                marked: 1
            }
        );
    }

    #[test]
    fn reads_resident_memory_in_scientific_notation() {
        assert_eq!(resident_memory_from_scrape(SCRAPE), Some(221_184_000));
        assert_eq!(resident_memory_from_scrape(b"a 1\n"), None);
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tpushgateway\nVmRSS:\t  215432 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(215_432 * 1024));
    }
}
