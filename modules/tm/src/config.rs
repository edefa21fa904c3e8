//! `[tm]` configuration: Kamailio's `tm` module parameters, in milliseconds as in Kamailio.

use std::time::Duration;

use serde::Deserialize;
use sip_txn::TimerConfig;

/// `[tm]`: timers and limits of the transaction layer.
///
/// ```toml
/// [tm]
/// fr_timer = 30000        # ms a branch waits for a final response (for INVITE: for any response)
/// fr_inv_timer = 120000   # ms an INVITE branch waits for the final once a provisional came
/// max_transactions = 200000
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TmConfig {
    /// Kamailio `fr_timer` (ms): how long a branch waits for a final response (non-INVITE) or
    /// for the first response (INVITE) before it ends with a local 408. Replaces RFC 3261
    /// Timers B and F. Default 30000.
    pub fr_timer: u64,
    /// Kamailio `fr_inv_timer` (ms): once an INVITE branch got a provisional response, how
    /// long it waits for the final one (RFC 3261 §16.6 step 11 Timer C); then the branch gets
    /// a CANCEL and ends with a local 408. Default 120000.
    pub fr_inv_timer: u64,
    /// Kamailio `max_inv_lifetime` (ms): an INVITE branch never waits longer than this for a
    /// final response, however many provisionals restart `fr_inv_timer`. Default 180000.
    pub max_inv_lifetime: u64,
    /// Kamailio `wt_timer` (ms): how long a transaction stays after its final response went
    /// upstream to absorb retransmissions, and RFC 3261 Timer D of INVITE branches (how long a
    /// non-2xx final is re-ACKed on UDP). RFC 3261 asks ≥ 32 s for Timer D; Kamailio uses 5 s
    /// and so do we, which keeps memory at ~5 s of traffic. Default 5000.
    pub wt_timer: u64,
    /// RFC 3261 T1 (ms), the RTT estimate: first retransmission interval, `64*T1` timeouts.
    /// Default 500.
    pub t1_ms: u64,
    /// RFC 3261 T2 (ms), the longest retransmission interval. Default 4000.
    pub t2_ms: u64,
    /// RFC 3261 T4 (ms), how long a message may live in the network (Timers I and K).
    /// Default 5000.
    pub t4_ms: u64,
    /// Most transactions alive at once. Beyond it `t_relay` fails with
    /// [`TmError::TooManyTransactions`](crate::TmError::TooManyTransactions) and the script
    /// answers 503 with `Retry-After` (load shedding instead of collapse). Default 200000.
    pub max_transactions: usize,
    /// `Retry-After` seconds suggested with the 503 answered when the table is full.
    /// Default 5.
    pub retry_after: u32,
    /// Kamailio `auto_inv_100`: answer 100 Trying to an INVITE as soon as it is relayed
    /// (RFC 3261 §16.2 / §17.2.1: it stops the caller's retransmissions). Default true.
    pub auto_inv_100: bool,
    /// Kamailio `restart_fr_on_each_reply`: each provisional (101-199) on an INVITE branch
    /// restarts `fr_inv_timer` (RFC 3261 §16.7 step 2). When false, the first provisional
    /// starts it and later ones do not extend it. Default true.
    pub restart_fr_on_each_reply: bool,
}

impl Default for TmConfig {
    fn default() -> Self {
        TmConfig {
            fr_timer: 30_000,
            fr_inv_timer: 120_000,
            max_inv_lifetime: 180_000,
            wt_timer: 5_000,
            t1_ms: 500,
            t2_ms: 4_000,
            t4_ms: 5_000,
            max_transactions: 200_000,
            retry_after: 5,
            auto_inv_100: true,
            restart_fr_on_each_reply: true,
        }
    }
}

impl TmConfig {
    /// The sip-txn timer values these parameters stand for.
    pub fn timers(&self) -> TimerConfig {
        let ms = Duration::from_millis;
        TimerConfig {
            t1: ms(self.t1_ms.max(1)),
            t2: ms(self.t2_ms.max(1)),
            t4: ms(self.t4_ms),
            timer_d: ms(self.wt_timer),
            fr_timer: Some(ms(self.fr_timer.max(1))),
            fr_inv_timer: ms(self.fr_inv_timer.max(1)),
            max_inv_lifetime: ms(self.max_inv_lifetime.max(1)),
        }
    }

    /// `wt_timer` as a duration.
    pub fn wait(&self) -> Duration {
        Duration::from_millis(self.wt_timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kamailio_defaults() {
        let c = TmConfig::default();
        assert_eq!(
            (c.fr_timer, c.fr_inv_timer, c.wt_timer),
            (30_000, 120_000, 5_000)
        );
        assert_eq!((c.t1_ms, c.t2_ms, c.t4_ms), (500, 4_000, 5_000));
        assert!(c.auto_inv_100 && c.restart_fr_on_each_reply);
        let t = c.timers();
        assert_eq!(t.fr_timer, Some(Duration::from_secs(30)));
        assert_eq!(t.timer_d, Duration::from_secs(5));
    }

    #[test]
    fn unknown_keys_are_refused_and_missing_ones_default() {
        let c: TmConfig = toml::from_str("fr_timer = 200\nt1_ms = 50").expect("valid");
        assert_eq!((c.fr_timer, c.t1_ms, c.fr_inv_timer), (200, 50, 120_000));
        assert!(toml::from_str::<TmConfig>("fr_timr = 200").is_err());
    }
}
