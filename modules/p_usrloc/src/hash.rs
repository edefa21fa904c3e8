//! Group choice: rendezvous (highest random weight) hashing over the group ids.
//!
//! Kamailio computes `crc32(user[@domain]) % groups + 1`, so adding a group re-homes almost
//! every user. Here every group gets a pseudo-random score per user and the highest wins: adding
//! group n+1 moves exactly the users for whom it scores highest, about 1/(n+1) of them, and
//! removing a group moves only its own users. Groups are identified by id, not by position, so
//! ids may have gaps. The score is xxh3 of the key mixed with the group id; it must never change
//! between releases (a golden-value test pins it).

use crate::config::PartitionBy;

/// The part of the AOR the group is chosen from: `user@domain` (scheme removed) or `user`.
pub fn partition_key(aor: &[u8], by: PartitionBy) -> &[u8] {
    let rest = match aor.iter().position(|&c| c == b':') {
        Some(i)
            if i > 0
                && aor[..i]
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')) =>
        {
            &aor[i + 1..]
        }
        _ => aor,
    };
    match by {
        PartitionBy::UserAtDomain => rest,
        PartitionBy::User => match rest.iter().rposition(|&c| c == b'@') {
            Some(i) => &rest[..i],
            None => rest,
        },
    }
}

/// The hash of a partition key (computed once per AOR, then scored per group).
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// splitmix64 finaliser: a bijective mix with full avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Score of group `group` for a key hash; the highest score wins.
fn score(h: u64, group: u32) -> u64 {
    mix(h ^ mix(u64::from(group).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// The group (out of `groups`) that holds the key with hash `h`; `None` if there are no groups.
pub fn place(h: u64, groups: &[u32]) -> Option<u32> {
    groups
        .iter()
        .map(|&g| (score(h, g), g))
        .max()
        .map(|(_, g)| g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Vec<u8> {
        format!("sip:user{i}@example.com").into_bytes()
    }

    #[test]
    fn the_partition_key_drops_the_scheme_and_optionally_the_domain() {
        let aor = b"sip:alice@example.com";
        assert_eq!(
            partition_key(aor, PartitionBy::UserAtDomain),
            b"alice@example.com"
        );
        assert_eq!(partition_key(aor, PartitionBy::User), b"alice");
        assert_eq!(
            partition_key(b"sips:bob@b.example", PartitionBy::User),
            b"bob"
        );
        assert_eq!(
            partition_key(b"example.com", PartitionBy::User),
            b"example.com"
        );
        // Same user in two domains: same group with `user`, usually not with `user@domain`.
        let g = [1, 2, 3, 4, 5, 6, 7, 8];
        let a = key_hash(partition_key(b"sip:carol@a.example", PartitionBy::User));
        let b = key_hash(partition_key(b"sip:carol@b.example", PartitionBy::User));
        assert_eq!(place(a, &g), place(b, &g));
    }

    #[test]
    fn placement_is_pinned_so_that_upgrades_never_move_users() {
        let groups = [1, 2, 3];
        let got: Vec<u32> = (0..12)
            .map(|i| {
                place(
                    key_hash(partition_key(&key(i), PartitionBy::UserAtDomain)),
                    &groups,
                )
                .unwrap()
            })
            .collect();
        assert_eq!(
            got, GOLDEN,
            "the placement function changed: stored users would move"
        );
        assert_eq!(place(1, &[]), None);
        assert_eq!(place(1, &[7]), Some(7));
        // Order of the group list does not matter.
        assert_eq!(place(12345, &[3, 1, 2]), place(12345, &[1, 2, 3]));
    }

    const GOLDEN: [u32; 12] = [2, 3, 2, 1, 3, 2, 1, 3, 3, 3, 3, 3];

    #[test]
    fn users_spread_evenly_over_the_groups() {
        let groups = [1, 2, 3, 4, 5];
        let mut count = [0u32; 5];
        let n = 100_000;
        for i in 0..n {
            let g = place(key_hash(&key(i)), &groups).unwrap();
            count[(g - 1) as usize] += 1;
        }
        for c in count {
            let share = f64::from(c) / f64::from(n);
            assert!((share - 0.2).abs() < 0.01, "{count:?}");
        }
    }

    #[test]
    fn adding_a_group_moves_about_one_in_n_plus_one_users_and_only_to_the_new_group() {
        let n_keys = 100_000u32;
        for n in 1..=8u32 {
            let old: Vec<u32> = (1..=n).collect();
            let new: Vec<u32> = (1..=n + 1).collect();
            let mut moved = 0u32;
            for i in 0..n_keys {
                let h = key_hash(&key(i));
                let (a, b) = (place(h, &old), place(h, &new));
                if a != b {
                    moved += 1;
                    assert_eq!(b, Some(n + 1), "a user moved between two old groups");
                }
            }
            let share = f64::from(moved) / f64::from(n_keys);
            let expected = 1.0 / f64::from(n + 1);
            assert!(
                (share - expected).abs() < 0.01,
                "{n} -> {}: moved {share:.4}, expected {expected:.4}",
                n + 1
            );
        }
        // Kamailio's modulo placement, for contrast: 2 -> 3 groups moves about 2/3.
        let moved = (0..n_keys)
            .filter(|&i| key_hash(&key(i)) % 2 != key_hash(&key(i)) % 3)
            .count();
        assert!(moved as f64 / f64::from(n_keys) > 0.6);
    }

    #[test]
    fn removing_a_group_moves_only_its_users() {
        let all = [1, 2, 3, 4];
        let without = [1, 2, 4];
        for i in 0..20_000 {
            let h = key_hash(&key(i));
            let before = place(h, &all).unwrap();
            if before != 3 {
                assert_eq!(place(h, &without), Some(before));
            }
        }
    }
}
