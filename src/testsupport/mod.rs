//! Helpers shared by the integration tests, the cluster tests and the benches; the gateway
//! itself does not use them. `peer` speaks the cluster's gRPC to a node as another member
//! would, to send it what a hostile or broken member could.

pub mod peer;

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Runs `promtool check metrics` on an exposition: parse errors fail, lint remarks do not
/// (pushed metrics are the clients' business).
pub fn promtool_check(body: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot run promtool (apt-get install prometheus, which ships it): {e}")
        })?;
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(body.as_bytes())
        .map_err(|e| format!("writing to promtool: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 0: clean, 3: lint remarks only; 1 (or "error while linting"): not a valid exposition.
    match out.status.code() {
        Some(0) | Some(3) if !text.contains("error while linting") => Ok(()),
        _ => Err(format!("promtool check metrics: {}", text.trim())),
    }
}

/// Ports this process has handed out: never twice, even once they are free again.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// The lowest port of the kernel's ephemeral range (what `bind(0)` and outgoing connections
/// take ports from).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// The range `free_port` picks from: from 10,000 up to the ephemeral range, or 10,000-29,999
/// when that range starts too low to leave room below it.
fn candidate_range(ephemeral_low: u16) -> std::ops::Range<u16> {
    if ephemeral_low > 12_000 {
        10_000..ephemeral_low
    } else {
        10_000..30_000
    }
}

/// A loopback port free for both TCP and UDP right now, for a child process to listen on.
///
/// Taken at random below the kernel's ephemeral range, not by binding port 0: a port the kernel
/// hands to `bind(0)` comes from the range it also hands to outgoing connections, so between
/// this function's check and the child's bind, any connection of any test running alongside
/// could take it, and the child would fail to start. Below that range only another explicit
/// pick can collide, and the checks here make that unlikely: the port is bound (TCP and UDP)
/// before it is returned, and this process never returns a port twice.
pub fn free_port() -> u16 {
    let range = candidate_range(ephemeral_low());
    let span = u64::from(range.end - range.start);
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..10_000 {
        let draw = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = range.start + (draw % span) as u16;
        if handed.contains(&port) {
            continue;
        }
        if usable(port) {
            handed.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {range:?} after 10,000 tries");
}

/// Whether a TCP listener and a UDP socket can both bind `port` on loopback now.
fn usable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// One edit of [`mutate`]: at a position (taken modulo the length), a byte, and what to do.
pub type Edit = (usize, u8, u8);

/// `valid` with `edits` applied (overwrite, insert, remove, or cut there), for never-panic
/// property tests of decoders: inputs near valid ones reach further into a decoder than random
/// bytes do.
pub fn mutate(valid: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = valid.to_vec();
    for &(at, byte, op) in edits {
        if b.is_empty() {
            b.push(byte);
            continue;
        }
        let i = at % b.len();
        match op % 4 {
            0 => b[i] = byte,
            1 => b.insert(i, byte),
            2 => {
                b.remove(i);
            }
            _ => b.truncate(i),
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_repeat() {
        let low = ephemeral_low();
        let range = candidate_range(low);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let p = free_port();
            assert!(range.contains(&p), "{p} outside {range:?}");
            if low > 12_000 {
                assert!(p < low, "{p} is in the ephemeral range starting at {low}");
            }
            assert!(seen.insert(p), "{p} handed out twice");
        }
    }

    #[test]
    fn a_port_taken_for_tcp_or_udp_is_not_usable() {
        let p = free_port();
        assert!(usable(p));
        {
            let _tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("the port was free");
            assert!(!usable(p), "{p} has a TCP listener");
        }
        {
            let _udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).expect("the port was free");
            assert!(!usable(p), "{p} has a UDP socket");
        }
        assert!(usable(p));
    }

    #[test]
    fn the_range_leaves_room_below_a_low_ephemeral_range() {
        assert_eq!(candidate_range(32768), 10_000..32768);
        assert_eq!(candidate_range(1024), 10_000..30_000);
    }
}
