//! A snapshot of the cluster as this node uses it: groups of databases with their effective
//! status, the spares, and the layout(s) users are placed over. Rebuilt on every reload and
//! swapped atomically; request paths only read it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::cluster::{ClusterRow, Status};
use crate::config::PartitionBy;
use crate::db::DbConn;
use crate::hash;

/// One database slot (a row of the cluster table) with its connection.
pub(crate) struct Slot {
    pub(crate) row: ClusterRow,
    /// `None` when the URL cannot be used (bad URL): the slot counts as off.
    pub(crate) conn: Option<Arc<DbConn>>,
}

/// How a database is used right now (`location.cluster`, metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DbState {
    /// The database reads of its group go to.
    Read,
    /// Readable, used when the read database fails.
    Standby,
    /// Written but not read (came back or missed a write less than `expire_window_s` ago).
    WriteOnly,
    /// Turned off (errors, watcher will retry) or unusable URL.
    Off,
    /// Drained by an operator.
    Maintenance,
    /// An available spare.
    Spare,
}

impl DbState {
    /// Kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DbState::Read => "read",
            DbState::Standby => "standby",
            DbState::WriteOnly => "write-only",
            DbState::Off => "off",
            DbState::Maintenance => "maintenance",
            DbState::Spare => "spare",
        }
    }
}

impl Slot {
    /// Status after this node's own view (a database it turned off, a bad URL).
    pub(crate) fn effective_status(&self) -> Status {
        match (&self.conn, self.row.status) {
            (_, Status::Maintenance) => Status::Maintenance,
            (None, _) => Status::Off,
            (Some(c), Status::On) if c.local_off.load(Ordering::Relaxed) => Status::Off,
            (_, s) => s,
        }
    }

    /// Failover time: the table's, or later if this node saw the database miss a write or
    /// brought it back itself.
    pub(crate) fn failover(&self) -> u64 {
        let local = self
            .conn
            .as_ref()
            .map_or(0, |c| c.local_failover.load(Ordering::Relaxed));
        self.row.failover.max(local)
    }

    pub(crate) fn usable(&self) -> bool {
        self.effective_status() == Status::On
    }

    /// Written but not read until this time (0 when readable).
    pub(crate) fn write_only_until(&self, window: u64) -> u64 {
        let f = self.failover();
        if f == 0 { 0 } else { f.saturating_add(window) }
    }

    pub(crate) fn readable(&self, now: u64, window: u64) -> bool {
        self.usable() && self.write_only_until(window) <= now
    }

    pub(crate) fn conn(&self) -> Option<&Arc<DbConn>> {
        self.conn.as_ref()
    }
}

/// A group of databases holding the same users.
pub(crate) struct Group {
    pub(crate) id: u32,
    pub(crate) slots: Vec<Slot>,
}

impl Group {
    /// Databases that take writes: every one in use.
    pub(crate) fn writable(&self) -> Vec<&Slot> {
        self.slots.iter().filter(|s| s.usable()).collect()
    }

    /// Databases in the order reads try them: readable ones by failover time (up longest
    /// first), then write-only ones (a last resort, partial data beats none) the same way.
    pub(crate) fn read_order(&self, now: u64, window: u64) -> Vec<&Slot> {
        let mut v: Vec<&Slot> = self.slots.iter().filter(|s| s.usable()).collect();
        v.sort_by_key(|s| (!s.readable(now, window), s.failover(), s.row.no));
        v
    }

    /// State of each slot, in slot order.
    pub(crate) fn states(&self, now: u64, window: u64) -> Vec<DbState> {
        let first = self
            .read_order(now, window)
            .first()
            .filter(|s| s.readable(now, window))
            .map(|s| s.row.no);
        self.slots
            .iter()
            .map(|s| match s.effective_status() {
                Status::Maintenance => DbState::Maintenance,
                Status::Off => DbState::Off,
                Status::On if !s.readable(now, window) => DbState::WriteOnly,
                Status::On if Some(s.row.no) == first => DbState::Read,
                Status::On => DbState::Standby,
            })
            .collect()
    }
}

/// A layout users were placed over before the current one, still consulted by reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PrevLayout {
    pub(crate) version: u64,
    pub(crate) groups: Vec<u32>,
    /// Reads stop falling back to it at this time (unix s).
    pub(crate) until: u64,
}

/// Where an AOR lives: the group of the current layout, and during a migration the groups
/// previous layouts chose (distinct, without the current one).
pub(crate) struct Placement {
    pub(crate) cur: Option<u32>,
    pub(crate) old: Vec<u32>,
}

pub(crate) struct Topology {
    pub(crate) groups: BTreeMap<u32, Group>,
    pub(crate) spares: Vec<Slot>,
    pub(crate) layout_version: u64,
    pub(crate) current: Vec<u32>,
    pub(crate) previous: Vec<PrevLayout>,
    pub(crate) loaded_at: u64,
}

impl Topology {
    pub(crate) fn empty() -> Topology {
        Topology {
            groups: BTreeMap::new(),
            spares: Vec::new(),
            layout_version: 0,
            current: Vec::new(),
            previous: Vec::new(),
            loaded_at: 0,
        }
    }

    pub(crate) fn in_transition(&self, now: u64) -> bool {
        self.previous.iter().any(|p| p.until > now)
    }

    /// The current group of an AOR.
    pub(crate) fn current_group(&self, aor: &[u8], by: PartitionBy) -> Option<u32> {
        hash::place(hash::key_hash(hash::partition_key(aor, by)), &self.current)
    }

    pub(crate) fn placement(&self, aor: &[u8], by: PartitionBy, now: u64) -> Placement {
        let h = hash::key_hash(hash::partition_key(aor, by));
        let cur = hash::place(h, &self.current);
        let mut old = Vec::new();
        for p in self.previous.iter().filter(|p| p.until > now) {
            if let Some(g) = hash::place(h, &p.groups)
                && Some(g) != cur
                && !old.contains(&g)
                && self.groups.contains_key(&g)
            {
                old.push(g);
            }
        }
        Placement { cur, old }
    }

    /// Every slot of every group, then the spares.
    pub(crate) fn all_slots(&self) -> impl Iterator<Item = &Slot> {
        self.groups
            .values()
            .flat_map(|g| g.slots.iter())
            .chain(self.spares.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(no: u32, status: Status, failover: u64) -> Slot {
        Slot {
            row: ClusterRow {
                id: 1,
                no,
                url: format!("sqlite::memory:{no}"),
                status,
                errors: 0,
                failover,
                spare: false,
                risk_group: no,
            },
            conn: None,
        }
    }

    #[test]
    fn a_slot_without_a_connection_counts_as_off_and_maintenance_wins() {
        let s = slot(1, Status::On, 0);
        assert_eq!(s.effective_status(), Status::Off);
        let s = slot(1, Status::Maintenance, 0);
        assert_eq!(s.effective_status(), Status::Maintenance);
        assert_eq!(slot(1, Status::On, 100).write_only_until(60), 160);
        assert_eq!(slot(1, Status::On, 0).write_only_until(60), 0);
    }

    #[test]
    fn previous_layouts_add_fallback_groups_until_their_window_ends() {
        let mut t = Topology::empty();
        for id in [1, 2, 3] {
            t.groups.insert(
                id,
                Group {
                    id,
                    slots: Vec::new(),
                },
            );
        }
        t.current = vec![1, 2, 3];
        t.previous = vec![PrevLayout {
            version: 1,
            groups: vec![1, 2],
            until: 1000,
        }];
        let mut moved = 0;
        for i in 0..3000 {
            let aor = format!("sip:u{i}@example.com");
            let p = t.placement(aor.as_bytes(), PartitionBy::UserAtDomain, 500);
            if p.cur == Some(3) {
                moved += 1;
                assert_eq!(p.old.len(), 1, "a moved user falls back to its old group");
                assert!(p.old[0] == 1 || p.old[0] == 2);
            } else {
                assert!(p.old.is_empty(), "users that did not move read one group");
            }
            let late = t.placement(aor.as_bytes(), PartitionBy::UserAtDomain, 1000);
            assert!(late.old.is_empty());
        }
        assert!((800..1200).contains(&moved), "{moved}");
        assert!(t.in_transition(999));
        assert!(!t.in_transition(1000));
    }
}
