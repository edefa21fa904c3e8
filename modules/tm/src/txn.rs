//! The proxy transaction (Kamailio's `cell`): one server transaction towards the caller, a
//! client transaction per branch (plus the CANCEL of that branch), the request as relayed,
//! the remaining q-groups and the response context of RFC 3261 §16.7.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use geosip_core::ctx::{MsgCtx, Target};
use sip_msg::SipMessage;
use sip_transport::Destination;
use sip_txn::{ClientTransaction, ServerTransaction, State, TimerHandle, TxnKey, TxnKind};
use smallvec::SmallVec;

use crate::MAX_BRANCHES;

/// One outgoing branch.
pub(crate) struct Branch {
    /// The RFC 3261 §17.1 client transaction carrying the request.
    pub client: ClientTransaction,
    /// Where the request went (with the local socket fixed).
    pub dst: Destination,
    /// The request as sent (parsed again only to build its CANCEL or ACK).
    pub request: Bytes,
    /// Final status of the branch for the response context; 0 while none.
    pub status: u16,
    /// Whether `status` came from the next hop (false: a local 408 / 487 / 503).
    pub received: bool,
    /// The stored non-2xx final response (a candidate for the best response).
    pub reply: Option<SipMessage>,
    /// The CANCEL of this branch, once sent.
    pub cancel: Option<ClientTransaction>,
    /// `fr_inv_timer` deadline when `restart_fr_on_each_reply` is off (the first provisional
    /// fixes it).
    pub fr_inv_at: Option<Instant>,
}

impl Branch {
    pub(crate) fn new(client: ClientTransaction, dst: Destination, request: Bytes) -> Self {
        Branch {
            client,
            dst,
            request,
            status: 0,
            received: false,
            reply: None,
            cancel: None,
            fr_inv_at: None,
        }
    }

    /// The branch has a final outcome for the response context.
    pub(crate) fn done(&self) -> bool {
        self.status != 0
    }

    /// The client transaction still waits for a final response.
    pub(crate) fn awaiting_final(&self) -> bool {
        matches!(
            self.client.state(),
            State::Calling | State::Trying | State::Proceeding
        )
    }

    /// Every transaction of the branch is over.
    pub(crate) fn terminated(&self) -> bool {
        self.client.is_terminated() && self.cancel.as_ref().is_none_or(|c| c.is_terminated())
    }

    /// Retransmissions sent by the branch's transactions.
    pub(crate) fn retransmissions(&self) -> u64 {
        u64::from(self.client.retransmissions())
            + self
                .cancel
                .as_ref()
                .map_or(0, |c| u64::from(c.retransmissions()))
    }
}

/// A transaction-stateful proxy transaction.
pub(crate) struct ProxyTxn {
    pub id: u64,
    pub salt: u32,
    pub kind: TxnKind,
    /// The request as relayed (the script's context when `t_relay` ran). `None` only while a
    /// failure route has it.
    pub req: Option<MsgCtx>,
    /// Towards the caller.
    pub server: ServerTransaction,
    /// Where responses go (RFC 3261 §18.2.2 for the request as received).
    pub reply_dst: Destination,
    /// Index entries pointing at this transaction (removed when it ends).
    pub keys: SmallVec<[TxnKey; 2]>,
    /// Matched the RFC 2543 way (no magic cookie): the ACK needs a key with our To tag.
    pub rfc2543: bool,
    pub branches: SmallVec<[Branch; 2]>,
    /// Targets of lower q not tried yet, highest q first (RFC 3261 §16.6 serial forking).
    pub pending: Vec<Target>,
    /// A CANCEL from upstream matched (§16.10).
    pub canceled: bool,
    pub got_6xx: bool,
    pub got_2xx: bool,
    /// RFC 3326 Reason to put in the CANCELs we send.
    pub cancel_reason: Option<Bytes>,
    /// The first final status sent upstream.
    pub final_sent: Option<u16>,
    /// Whether a provisional went upstream (no automatic 100 after that).
    pub provisional_sent: bool,
    /// No final will go upstream from tm: a non-INVITE whose branches all timed out
    /// (RFC 4320), or a failure route that answered statelessly.
    pub silent: bool,
    /// When the final went upstream (or `silent` was decided): the `wt_timer` starts.
    pub final_at: Option<Instant>,
    pub branch_timeout: bool,
    pub replied: bool,
    pub on_failure: Option<Arc<str>>,
    pub on_reply: Option<Arc<str>>,
    pub timer: Option<TimerHandle>,
    pub timer_at: Option<Instant>,
    /// Removed from the table: anyone who still holds the `Arc` treats it as gone.
    pub freed: bool,
}

impl ProxyTxn {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        salt: u32,
        kind: TxnKind,
        server: ServerTransaction,
        reply_dst: Destination,
        key: TxnKey,
        rfc2543: bool,
    ) -> Self {
        let mut keys = SmallVec::new();
        keys.push(key);
        ProxyTxn {
            id,
            salt,
            kind,
            req: None,
            server,
            reply_dst,
            keys,
            rfc2543,
            branches: SmallVec::new(),
            pending: Vec::new(),
            canceled: false,
            got_6xx: false,
            got_2xx: false,
            cancel_reason: None,
            final_sent: None,
            provisional_sent: false,
            silent: false,
            final_at: None,
            branch_timeout: false,
            replied: false,
            on_failure: None,
            on_reply: None,
            timer: None,
            timer_at: None,
            freed: false,
        }
    }

    pub(crate) fn is_invite(&self) -> bool {
        self.kind == TxnKind::Invite
    }

    /// Every branch has a final outcome and nothing final went upstream: time for the best
    /// response, a failure route, or the next q group.
    pub(crate) fn needs_completion(&self) -> bool {
        self.final_sent.is_none()
            && !self.silent
            && !self.server.is_terminated()
            && (self.canceled || !self.branches.is_empty())
            && self.branches.iter().all(Branch::done)
    }

    /// Whether the transaction accepts new branches (RFC 3261 §16.7 step 5 and §16.10: not
    /// after a 6xx, a 2xx, a CANCEL or a final response).
    pub(crate) fn closed_status(&self) -> Option<u16> {
        if self.canceled {
            Some(487)
        } else if let Some(s) = self.final_sent {
            Some(s)
        } else if self.got_6xx || self.got_2xx {
            Some(
                self.branches
                    .iter()
                    .map(|b| b.status)
                    .find(|s| *s >= 600 || (200..300).contains(s))
                    .unwrap_or(600),
            )
        } else if self.branches.len() >= MAX_BRANCHES {
            Some(500)
        } else {
            None
        }
    }

    /// The earliest deadline of anything in the transaction. The end of the `wt_timer` wait
    /// counts only while it is ahead of `now`: once it has passed, what still keeps the
    /// transaction (a branch waiting for its final, an ACK to absorb) has deadlines of its own,
    /// and a past deadline would only make the timer spin.
    pub(crate) fn next_deadline(&self, wait: Duration, now: Instant) -> Option<Instant> {
        let mut next = self.server.poll_timeout();
        let mut take = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for b in &self.branches {
            take(b.client.poll_timeout());
            take(b.cancel.as_ref().and_then(ClientTransaction::poll_timeout));
            if b.awaiting_final() {
                take(b.fr_inv_at);
            }
        }
        take(
            self.final_at
                .and_then(|t| t.checked_add(wait))
                .filter(|t| *t > now),
        );
        next
    }

    /// Whether the transaction can be freed now: everything in it terminated, or the final
    /// response went upstream `wait` ago (Kamailio's `wt_timer`) and nothing still waits for
    /// a final response or (INVITE, non-2xx) for the caller's ACK.
    pub(crate) fn can_free(&self, now: Instant, wait: Duration) -> bool {
        if self.server.is_terminated() && self.branches.iter().all(Branch::terminated) {
            return true;
        }
        match self.final_at.and_then(|t| t.checked_add(wait)) {
            Some(end) if now >= end => {
                let awaiting_ack = self.server.kind() == TxnKind::Invite
                    && self.server.state() == State::Completed;
                !awaiting_ack && !self.branches.iter().any(Branch::awaiting_final)
            }
            _ => false,
        }
    }

    /// Retransmissions sent by every transaction in here.
    pub(crate) fn retransmissions(&self) -> u64 {
        u64::from(self.server.retransmissions())
            + self
                .branches
                .iter()
                .map(Branch::retransmissions)
                .sum::<u64>()
    }
}

/// Sorts targets by q (highest first, stable) and splits off the first q group (sent in
/// parallel now) from the rest (kept for serial forking, RFC 3261 §16.6). At most
/// [`MAX_BRANCHES`] targets are kept.
pub(crate) fn split_groups(
    mut targets: SmallVec<[Target; 2]>,
) -> (SmallVec<[Target; 2]>, Vec<Target>) {
    if targets.len() > MAX_BRANCHES {
        tracing::warn!(
            targets = targets.len(),
            max = MAX_BRANCHES,
            "target set truncated"
        );
        targets.truncate(MAX_BRANCHES);
    }
    targets.sort_by_key(|t| std::cmp::Reverse(t.q));
    let top = targets.first().map(|t| t.q);
    let n = targets.iter().take_while(|t| Some(t.q) == top).count();
    let rest: Vec<Target> = targets.drain(n..).collect();
    (targets, rest)
}

/// Takes the next q group off `pending` (highest q first).
pub(crate) fn next_group(pending: &mut Vec<Target>) -> Vec<Target> {
    let top = pending.first().map(|t| t.q);
    let n = pending.iter().take_while(|t| Some(t.q) == top).count();
    pending.drain(..n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(uri: &'static str, q: u16) -> Target {
        Target {
            q,
            ..Target::uri(Bytes::from_static(uri.as_bytes()))
        }
    }

    #[test]
    fn targets_are_split_into_the_highest_q_group_and_the_rest_by_decreasing_q() {
        let ts: SmallVec<[Target; 2]> = [
            t("sip:a", 500),
            t("sip:b", 1000),
            t("sip:c", 100),
            t("sip:d", 1000),
            t("sip:e", 500),
        ]
        .into_iter()
        .collect();
        let (first, mut rest) = split_groups(ts);
        let uris = |v: &[Target]| v.iter().map(|t| t.uri.clone()).collect::<Vec<_>>();
        assert_eq!(uris(&first), ["sip:b", "sip:d"]);
        assert_eq!(uris(&next_group(&mut rest)), ["sip:a", "sip:e"]);
        assert_eq!(uris(&next_group(&mut rest)), ["sip:c"]);
        assert!(next_group(&mut rest).is_empty());
    }

    #[test]
    fn a_huge_target_set_is_truncated_to_the_branch_limit() {
        let ts: SmallVec<[Target; 2]> = (0..40).map(|_| t("sip:x", 1000)).collect();
        let (first, rest) = split_groups(ts);
        assert_eq!(first.len() + rest.len(), MAX_BRANCHES);
    }
}
