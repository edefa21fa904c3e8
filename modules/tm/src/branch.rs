//! The branch parameter of the requests tm sends: it carries the transaction id, a per-transaction
//! random salt and the branch index, so a reply finds its transaction with one integer lookup
//! (no hashing of header strings) and a reply with a guessed or stale id is refused.
//!
//! Format (33 bytes): `z9hG4bK` (RFC 3261 §8.1.1.7 magic cookie), `t`, 16 lowercase hex digits
//! of the id, 8 of the salt, 1 of the index. Stateless forwarding (`z9hG4bKsl…`) never
//! produces this shape. On the wire the core appends `.` and 16 hex digits of the loop hash
//! (RFC 3261 §16.6 step 8, see `Core::is_looped`); decoding ignores that suffix.

/// Magic cookie plus our marker.
const PREFIX: &[u8] = b"z9hG4bKt";

/// Length of an encoded branch.
pub const BRANCH_LEN: usize = PREFIX.len() + 16 + 8 + 1;

/// What a tm branch parameter carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BranchId {
    /// Transaction id (its low bits name the table shard).
    pub id: u64,
    /// Random per-transaction salt: a reply must echo it.
    pub salt: u32,
    /// Index of the branch in its transaction (< 16).
    pub index: u8,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = HEX[(v & 15) as usize];
        v >>= 4;
    }
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

impl BranchId {
    /// The branch parameter value.
    pub fn encode(&self) -> [u8; BRANCH_LEN] {
        let mut out = [0u8; BRANCH_LEN];
        out[..PREFIX.len()].copy_from_slice(PREFIX);
        let p = PREFIX.len();
        put_hex(&mut out[p..p + 16], self.id);
        put_hex(&mut out[p + 16..p + 24], u64::from(self.salt));
        put_hex(&mut out[p + 24..], u64::from(self.index & 15));
        out
    }

    /// Decodes a branch made by [`encode`](Self::encode); `None` for anything else (other
    /// elements' branches, stateless branches, damaged values).
    pub fn decode(b: &[u8]) -> Option<BranchId> {
        // Our own length, or our length plus the `.` + 16-digit loop hash suffix.
        let b = match b.len() {
            BRANCH_LEN => b,
            n if n == BRANCH_LEN + 17 && b[BRANCH_LEN] == b'.' => &b[..BRANCH_LEN],
            _ => return None,
        };
        if !b.starts_with(PREFIX) {
            return None;
        }
        let p = PREFIX.len();
        let id = parse_hex(b.get(p..p + 16)?)?;
        let salt = u32::try_from(parse_hex(b.get(p + 16..p + 24)?)?).ok()?;
        let index = u8::try_from(parse_hex(b.get(p + 24..)?)?).ok()?;
        Some(BranchId { id, salt, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_branch_decodes_to_the_id_salt_and_index_it_was_made_from() {
        for (id, salt, index) in [(0, 0, 0), (1, 0xdead_beef, 11), (u64::MAX, u32::MAX, 15)] {
            let b = BranchId { id, salt, index };
            let enc = b.encode();
            assert!(enc.starts_with(b"z9hG4bK"));
            assert_eq!(BranchId::decode(&enc), Some(b));
        }
    }

    #[test]
    fn foreign_stateless_and_damaged_branches_do_not_decode() {
        let good = BranchId {
            id: 77,
            salt: 9,
            index: 2,
        }
        .encode();
        assert!(BranchId::decode(b"z9hG4bK776asdhds").is_none());
        assert!(BranchId::decode(b"z9hG4bKsl0123456789abcdef").is_none());
        assert!(BranchId::decode(&good[..BRANCH_LEN - 1]).is_none());
        let mut upper = good;
        upper[10] = b'A';
        assert!(BranchId::decode(&upper).is_none());
        let mut longer = good.to_vec();
        longer.push(b'0');
        assert!(BranchId::decode(&longer).is_none());
        assert!(BranchId::decode(b"").is_none());
    }

    #[test]
    fn a_branch_with_the_loop_hash_suffix_decodes_like_the_bare_branch() {
        let b = BranchId {
            id: 5,
            salt: 6,
            index: 7,
        };
        let mut wire = b.encode().to_vec();
        wire.extend_from_slice(b".0123456789abcdef");
        assert_eq!(BranchId::decode(&wire), Some(b));
        let last = wire.len() - 17;
        wire[last] = b'x';
        assert!(BranchId::decode(&wire).is_none());
    }
}
