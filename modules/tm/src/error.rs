//! Why `t_relay` / `t_reply` failed, which side is to blame, and what to answer.

use geosip_core::fwd::ForwardError;
use geosip_core::out::NextHopError;

/// Which side of the proxy a [`TmError`] comes from (as pingora's error sources do): the
/// script or pipeline uses it for logs and metrics, and answers [`TmError::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The request itself cannot be relayed (bad target URI, Max-Forwards exhausted, loop).
    Request,
    /// The next hop: unresolvable, no socket for its transport, the send failed.
    NextHop,
    /// This server: transaction table full, called where not allowed, already answered.
    Local,
}

/// A failure of a `tm` function. Nothing has been answered upstream when one is returned
/// (except that an INVITE may have had its 100 Trying): the caller answers
/// [`status`](Self::status) with [`reason`](Self::reason) (plus `Retry-After:
/// `[`retry_after`](Self::retry_after) when set), typically with `t_reply` or `sl.send_reply`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TmError {
    /// No usable next hop for any target: bad URI (400), unsupported scheme (416),
    /// unsupported transport (503), unresolvable host (478).
    #[error("no route to the target: {}", .0.reason())]
    NextHop(NextHopError),
    /// No listening socket of the transport the target needs (503).
    #[error("no local socket for the target's transport")]
    NoSocket,
    /// Sending failed on every branch (503).
    #[error("sending to the next hop failed")]
    Send,
    /// Every branch would be sent to this server itself, or the request came back unchanged
    /// (RFC 3261 §16.3 step 4): 482.
    #[error("loop detected: the target is this server or the request came back unchanged")]
    Loop,
    /// Max-Forwards is 0 (483, RFC 3261 §16.3 step 3).
    #[error("Max-Forwards exhausted")]
    TooManyHops,
    /// The request has no usable Via / CSeq / Call-ID (400).
    #[error("request not relayable (missing Via, CSeq or Call-ID)")]
    BadRequest,
    /// `max_transactions` transactions are alive (503 with Retry-After).
    #[error("too many transactions")]
    TooManyTransactions {
        /// Seconds for `Retry-After`.
        retry_after: u32,
    },
    /// The transaction has [`MAX_BRANCHES`](crate::MAX_BRANCHES) branches already (500).
    #[error("too many branches in this transaction")]
    TooManyBranches,
    /// The transaction accepts no new branch: it was cancelled (487), a 6xx or a 2xx was
    /// received (RFC 3261 §16.7 step 5, §16.10), or a final response was sent.
    #[error("the transaction accepts no new branches (status {status})")]
    Closed {
        /// What the transaction ended with (487 for a CANCEL).
        status: u16,
    },
    /// Every target was dropped by the branch route (the script chose; answer 500 or not
    /// at all).
    #[error("every branch was dropped by the branch route")]
    AllBranchesDropped,
    /// A final response was already sent on this transaction.
    #[error("a final response was already sent")]
    AlreadyReplied,
    /// Called from a route where the transaction cannot be used (a reply or branch route, or
    /// re-entered while this thread holds a transaction) (500).
    #[error("tm function not allowed here")]
    NotAllowed,
}

impl TmError {
    /// The SIP status to answer upstream.
    pub fn status(&self) -> u16 {
        match self {
            TmError::NextHop(e) => e.status(),
            TmError::NoSocket | TmError::Send | TmError::TooManyTransactions { .. } => 503,
            TmError::Loop => 482,
            TmError::TooManyHops => 483,
            TmError::BadRequest => 400,
            TmError::Closed { status } => *status,
            TmError::TooManyBranches
            | TmError::AllBranchesDropped
            | TmError::AlreadyReplied
            | TmError::NotAllowed => 500,
        }
    }

    /// A reason phrase for [`status`](Self::status).
    pub fn reason(&self) -> &'static str {
        match self {
            TmError::NextHop(e) => e.reason(),
            TmError::NoSocket => "Transport Not Available",
            TmError::Send => "Unable To Forward",
            TmError::TooManyTransactions { .. } => "Server Overloaded",
            TmError::Loop => "Loop Detected",
            TmError::TooManyHops => "Too Many Hops",
            TmError::BadRequest => "Bad Request",
            TmError::Closed { status } => sip_msg::reason_phrase(*status),
            TmError::TooManyBranches => "Too Many Branches",
            TmError::AllBranchesDropped => "No Branch Left",
            TmError::AlreadyReplied => "Already Replied",
            TmError::NotAllowed => "Server Internal Error",
        }
    }

    /// `Retry-After` seconds to add to the answer (overload only).
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            TmError::TooManyTransactions { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            TmError::NextHop(NextHopError::BadUri | NextHopError::UnsupportedScheme)
            | TmError::Loop
            | TmError::TooManyHops
            | TmError::BadRequest => Side::Request,
            TmError::NextHop(_) | TmError::NoSocket | TmError::Send => Side::NextHop,
            _ => Side::Local,
        }
    }
}

impl From<ForwardError> for TmError {
    fn from(e: ForwardError) -> Self {
        match e {
            ForwardError::NextHop(h) => TmError::NextHop(h),
            ForwardError::NoSocket => TmError::NoSocket,
            ForwardError::Send(_) => TmError::Send,
            ForwardError::Loop => TmError::Loop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_the_status_kamailio_answers() {
        assert_eq!(TmError::NextHop(NextHopError::Unresolvable).status(), 478);
        assert_eq!(
            TmError::NextHop(NextHopError::Unresolvable).side(),
            Side::NextHop
        );
        assert_eq!(
            TmError::NextHop(NextHopError::UnsupportedScheme).side(),
            Side::Request
        );
        let full = TmError::TooManyTransactions { retry_after: 5 };
        assert_eq!(
            (full.status(), full.retry_after(), full.side()),
            (503, Some(5), Side::Local)
        );
        assert_eq!(
            TmError::Closed { status: 487 }.reason(),
            "Request Terminated"
        );
        assert_eq!(TmError::TooManyHops.status(), 483);
    }
}
