//! Timer values: RFC 3261 §17.1.1.1 / Table 4 plus the Kamailio `tm` knobs operators know.

use std::time::Duration;

/// Retransmission intervals below this are raised to it, so a zero or absurdly small `t1`
/// in a configuration cannot make a transaction retransmit in a busy loop.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The timer values every transaction of a proxy shares.
///
/// RFC 3261 §17.1.1.1:
/// > "T1 is an estimate of the round-trip time (RTT), and it defaults to 500 ms."
///
/// RFC 3261 Table 4 (Timer B, F, H, J, and RFC 6026's L and M are all `64*T1`):
///
/// | timer | value | used by |
/// |---|---|---|
/// | A | initially T1, doubles (no cap) | client INVITE retransmit, UDP only |
/// | B | 64·T1, or [`fr_timer`](Self::fr_timer) | client INVITE, no response at all |
/// | C | [`fr_inv_timer`](Self::fr_inv_timer), restarted on provisionals | client INVITE after a 1xx |
/// | D | [`timer_d`](Self::timer_d) (≥ 32 s) UDP, 0 reliable | client INVITE Completed |
/// | E | initially T1, doubles, capped at T2 | client non-INVITE retransmit, UDP only |
/// | F | 64·T1, or [`fr_timer`](Self::fr_timer) | client non-INVITE timeout |
/// | G | initially T1, doubles, capped at T2 | server INVITE final retransmit, UDP only |
/// | H | 64·T1 | server INVITE wait for ACK |
/// | I | T4 UDP, 0 reliable | server INVITE Confirmed |
/// | J | 64·T1 UDP, 0 reliable | server non-INVITE Completed |
/// | K | T4 UDP, 0 reliable | client non-INVITE Completed |
/// | L | 64·T1 | server INVITE Accepted (RFC 6026) |
/// | M | 64·T1 | client INVITE Accepted (RFC 6026) |
///
/// Every field is public so the `tm` module can map its parameters straight onto it; the
/// transactions sanitise what they read (intervals are at least 1 ms, `t2 >= t1`) so that no
/// configuration can make them spin, and any deadline that would overflow `Instant` fires
/// at once instead of never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RFC 3261 T1, the RTT estimate: first retransmission interval and the unit of `64*T1`.
    /// Default 500 ms.
    pub t1: Duration,
    /// RFC 3261 T2, "the maximum retransmit interval for non-INVITE requests and INVITE
    /// responses". Default 4 s.
    pub t2: Duration,
    /// RFC 3261 T4, "maximum duration a message will remain in the network" (Timers I and K).
    /// Default 5 s.
    pub t4: Duration,
    /// Timer D, how long a client INVITE transaction stays Completed over an unreliable
    /// transport to absorb retransmitted final responses: "at least 32 seconds for unreliable
    /// transports". Default 32 s. (Zero on reliable transports whatever this says.)
    pub timer_d: Duration,
    /// Kamailio `tm.fr_timer`: how long a client transaction waits for the *first* response
    /// (of an INVITE) or for the final response (of any other request) before it times out
    /// with [`Event::Timeout`](crate::Event::Timeout). It replaces Timer B and Timer F.
    ///
    /// `None` (the default) means the RFC value `64*T1` (32 s with the default T1). Kamailio's
    /// own default is 30 s; set `Some(Duration::from_secs(30))` for byte-for-byte Kamailio
    /// timing.
    pub fr_timer: Option<Duration>,
    /// Kamailio `tm.fr_inv_timer`: once an INVITE client transaction has received a
    /// provisional response, how long it waits for the final one. This is the role of RFC 3261
    /// Timer C (§16.6 step 11), restarted on each provisional per §16.7 step 2:
    /// > "If the response is a provisional response with status codes 101 to 199 inclusive
    /// > (i.e., anything but 100), the proxy MUST reset timer C for that client transaction."
    ///
    /// Any provisional (100 too, as in Kamailio) arms it when it leaves Calling; 101-199
    /// restart it. Default 120 s (Kamailio's; the RFC asks for more than 3 minutes).
    pub fr_inv_timer: Duration,
    /// Kamailio `tm.max_inv_lifetime`: an INVITE client transaction never waits for a final
    /// response longer than this after it was created, however often provisionals restart
    /// [`fr_inv_timer`](Self::fr_inv_timer). It bounds a transaction kept alive by a peer
    /// sending 180 forever. It also sizes the guard on INVITE server transactions (see
    /// [`ServerTransaction`](crate::ServerTransaction)). Default 180 s.
    pub max_inv_lifetime: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self::RFC3261
    }
}

impl TimerConfig {
    /// RFC 3261 defaults (T1 500 ms, T2 4 s, T4 5 s, D 32 s) with Kamailio's defaults for the
    /// proxy timers (`fr_inv_timer` 120 s, `max_inv_lifetime` 180 s) and `fr_timer` = `64*T1`.
    pub const RFC3261: TimerConfig = TimerConfig {
        t1: Duration::from_millis(500),
        t2: Duration::from_secs(4),
        t4: Duration::from_secs(5),
        timer_d: Duration::from_secs(32),
        fr_timer: None,
        fr_inv_timer: Duration::from_secs(120),
        max_inv_lifetime: Duration::from_secs(180),
    };

    /// T1 as the transactions use it (at least 1 ms).
    pub(crate) fn t1(&self) -> Duration {
        self.t1.max(MIN_INTERVAL)
    }

    /// T2 as the transactions use it (at least T1).
    pub(crate) fn t2(&self) -> Duration {
        self.t2.max(self.t1())
    }

    /// `64*T1`: Timers B, F, H, J, L, M.
    pub fn t1_x64(&self) -> Duration {
        self.t1().saturating_mul(64)
    }

    /// The effective Timer B / Timer F: [`fr_timer`](Self::fr_timer) or `64*T1`.
    pub fn final_response_timeout(&self) -> Duration {
        self.fr_timer.unwrap_or_else(|| self.t1_x64())
    }

    /// How long a server transaction waits for its TU to pass a final response before it
    /// gives up with [`Event::Timeout`](crate::Event::Timeout) and terminates. RFC 3261 sets
    /// no such limit (it trusts the TU); a carrier proxy needs one so that a TU bug cannot
    /// leak transactions. The proxy's own client transactions time out first and the TU
    /// answers 408 then, so this only fires when something is stuck:
    ///
    /// * INVITE: `max_inv_lifetime + 64*T1` (212 s by default);
    /// * non-INVITE: `fr_timer + 64*T1` (64 s by default).
    pub fn server_guard(&self, kind: crate::TxnKind) -> Duration {
        match kind {
            crate::TxnKind::Invite => self.max_inv_lifetime.saturating_add(self.t1_x64()),
            crate::TxnKind::NonInvite => {
                self.final_response_timeout().saturating_add(self.t1_x64())
            }
        }
    }
}

/// `now + d`, or `now` if that would overflow `Instant`: a deadline that cannot be
/// represented fires at once rather than never, so every transaction still terminates.
pub(crate) fn after(now: std::time::Instant, d: Duration) -> std::time::Instant {
    now.checked_add(d).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_rfc_values_with_kamailio_proxy_timers() {
        let c = TimerConfig::default();
        assert_eq!(c.t1, Duration::from_millis(500));
        assert_eq!(c.t2, Duration::from_secs(4));
        assert_eq!(c.t4, Duration::from_secs(5));
        assert_eq!(c.t1_x64(), Duration::from_secs(32));
        assert_eq!(c.final_response_timeout(), Duration::from_secs(32));
        assert_eq!(c.fr_inv_timer, Duration::from_secs(120));
    }

    #[test]
    fn fr_timer_replaces_sixty_four_t1_when_set() {
        let c = TimerConfig {
            fr_timer: Some(Duration::from_secs(30)),
            ..TimerConfig::default()
        };
        assert_eq!(c.final_response_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn zero_timers_are_sanitised_so_nothing_spins() {
        let c = TimerConfig {
            t1: Duration::ZERO,
            t2: Duration::ZERO,
            ..TimerConfig::default()
        };
        assert_eq!(c.t1(), Duration::from_millis(1));
        assert_eq!(c.t2(), Duration::from_millis(1));
    }

    #[test]
    fn huge_timers_saturate_instead_of_overflowing() {
        let c = TimerConfig {
            t1: Duration::MAX,
            max_inv_lifetime: Duration::MAX,
            ..TimerConfig::default()
        };
        let now = std::time::Instant::now();
        assert_eq!(after(now, c.t1_x64()), now);
        assert_eq!(c.server_guard(crate::TxnKind::Invite), Duration::MAX);
    }
}
