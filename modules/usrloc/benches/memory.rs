//! Memory per contact at 1,000,000 contacts of typical size.
//!
//! Run: `cargo bench -p geosip-usrloc --bench memory` (env `CONTACTS=n` to change the count).
//! Prints the resident-set growth (from /proc/self/statm) divided by the number of contacts.
//! Typical contact: AOR `sip:+4930xxxxxxx@example.com`, contact
//! `sip:+4930xxxxxxx@10.a.b.c:5060;transport=udp`, a 40-character Call-ID, one of 20
//! User-Agents of ~30 bytes, received address + local socket, no Path, no instance.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use geosip_usrloc::{ContactInfo, Location, Received, Transport, UsrlocConfig};

fn page_size() -> u64 {
    std::process::Command::new("getconf")
        .arg("PAGESIZE")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

fn rss_bytes(page: u64) -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * page
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let n: u64 = std::env::var("CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let page = page_size();
    let agents: Vec<Bytes> = (0..20)
        .map(|i| Bytes::from(format!("Yealink SIP-T46S 66.86.0.{i:<3}x")))
        .collect();
    let now_ms = 1_900_000_000_000u64;
    let loc = Location::memory(UsrlocConfig {
        timer_interval_s: 0,
        ..UsrlocConfig::default()
    });
    let local = "198.51.100.1:5060".parse().unwrap();
    let before = rss_bytes(page);
    let start = Instant::now();
    for i in 0..n {
        let number = 4_930_000_000u64 + i;
        let aor = format!("sip:+{number}@example.com");
        let ip = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let contact = format!(
            "sip:+{number}@{}.{}.{}.{}:5060;transport=udp",
            ip[0], ip[1], ip[2], ip[3]
        );
        let info = ContactInfo {
            contact: Bytes::from(contact),
            expires: now_ms / 1000 + 3600,
            q: 1000,
            call_id: Bytes::from(format!(
                "{:032x}@10.0.0.1",
                u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )),
            cseq: 1,
            received: Some(Received {
                transport: Transport::Udp,
                source: std::net::SocketAddr::from((ip, 5060 + (i % 1000) as u16)),
                local,
            }),
            user_agent: agents[(i % 20) as usize].clone(),
            ..ContactInfo::default()
        };
        loc.add(aor.as_bytes(), info, now_ms).unwrap();
    }
    let insert = start.elapsed();
    let after = rss_bytes(page);
    let start = Instant::now();
    let mut found = 0usize;
    for i in (0..n).step_by(7) {
        let aor = format!("sip:+{}@example.com", 4_930_000_000u64 + i);
        found += black_box(loc.lookup(aor.as_bytes(), now_ms).unwrap()).len();
    }
    let lookup = start.elapsed();
    let s = loc.stats();
    assert_eq!(s.contacts, n);
    println!(
        "usrloc memory: {n} contacts in {} AORs, {} interned User-Agents",
        s.aors, s.user_agents
    );
    println!(
        "usrloc memory: RSS {:.1} MiB -> {:.1} MiB, {:.0} bytes/contact",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after.saturating_sub(before)) as f64 / n as f64
    );
    println!(
        "usrloc memory: insert {:.0} ns/contact, lookup {:.0} ns (single thread, informational)",
        insert.as_nanos() as f64 / n as f64,
        lookup.as_nanos() as f64 / found.max(1) as f64
    );
}
