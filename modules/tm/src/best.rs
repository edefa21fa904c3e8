//! "Best" final response selection, RFC 3261 §16.7 step 6:
//!
//! > "If no 6xx was received, the proxy SHOULD choose the lowest response class stored in the
//! > response context ... The proxy MAY select any response within that chosen class. The
//! > proxy SHOULD give preference to responses that provide information affecting
//! > resubmission of this request, such as 401, 407, 415, 420, and 484 if the 4xx class is
//! > chosen."
//!
//! and on 503:
//!
//! > "If the only response that was received is a 503, the proxy SHOULD generate a 500
//! > response and forward that upstream."

/// The final outcome of one branch, for selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Final status (300-699; others are not candidates).
    pub status: u16,
    /// Whether it was received from the next hop (as opposed to generated here: a timeout's
    /// 408, a 487 for a branch cancelled before any answer, a 503 for a failed send).
    pub received: bool,
}

/// Index of the best candidate: a 6xx if any (the first one), else the lowest class among
/// 3xx-5xx; within a class a "resubmission" code (401, 407, 415, 420, 484) first, then a
/// received response over a local one, then anything over 503, then the earliest branch.
pub fn best(cands: &[Candidate]) -> Option<usize> {
    let rank = |c: &Candidate| -> Option<(u8, u8, u8, u8)> {
        if !(300..=699).contains(&c.status) {
            return None;
        }
        let class = (c.status / 100) as u8;
        // 6xx beats everything (class order 0), then 3, 4, 5.
        let class_rank = if class == 6 { 0 } else { class };
        let pref = u8::from(!matches!(c.status, 401 | 407 | 415 | 420 | 484));
        let local = u8::from(!c.received);
        let is503 = u8::from(c.status == 503);
        Some((class_rank, pref, local, is503))
    };
    cands
        .iter()
        .enumerate()
        .filter_map(|(i, c)| rank(c).map(|r| (r, i)))
        .min()
        .map(|(_, i)| i)
}

/// The status actually sent upstream for a chosen `status`: 503 becomes 500 (§16.7 step 6).
pub fn upstream_status(status: u16) -> u16 {
    if status == 503 { 500 } else { status }
}

/// Whether the chosen response collects the challenges of the other branches (§16.7 step 7:
/// "If the selected response is a 401 (Unauthorized) or 407 (Proxy Authentication Required),
/// the proxy MUST collect any WWW-Authenticate and Proxy-Authenticate header field values from
/// all other 401 (Unauthorized) and 407 (Proxy Authentication Required) responses received so
/// far in this response context and add them to this response").
pub fn aggregates_challenges(status: u16) -> bool {
    matches!(status, 401 | 407)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(status: u16) -> Candidate {
        Candidate {
            status,
            received: true,
        }
    }
    fn l(status: u16) -> Candidate {
        Candidate {
            status,
            received: false,
        }
    }

    #[test]
    fn a_6xx_wins_over_every_other_class() {
        assert_eq!(best(&[r(302), r(486), r(603), r(500)]), Some(2));
        assert_eq!(best(&[r(600), r(604)]), Some(0));
    }

    #[test]
    fn without_a_6xx_the_lowest_class_wins() {
        assert_eq!(best(&[r(500), r(486), r(302)]), Some(2));
        assert_eq!(best(&[r(503), r(404)]), Some(1));
        assert_eq!(
            best(&[r(480), r(486)]),
            Some(0),
            "same class: earliest branch"
        );
    }

    #[test]
    fn resubmission_codes_are_preferred_within_the_4xx_class() {
        assert_eq!(best(&[r(486), r(407)]), Some(1));
        assert_eq!(best(&[r(404), r(484)]), Some(1));
        assert_eq!(best(&[r(401), r(407)]), Some(0));
    }

    #[test]
    fn a_received_response_beats_a_local_one_of_the_same_class() {
        assert_eq!(best(&[l(408), r(486)]), Some(1));
        assert_eq!(best(&[l(408), l(487)]), Some(0));
        assert_eq!(
            best(&[l(408), r(503)]),
            Some(0),
            "4xx is a lower class than 5xx"
        );
    }

    #[test]
    fn a_503_is_chosen_last_in_its_class_and_goes_upstream_as_500() {
        assert_eq!(best(&[r(503), r(502)]), Some(1));
        assert_eq!(best(&[r(503)]), Some(0));
        assert_eq!(upstream_status(503), 500);
        assert_eq!(upstream_status(502), 502);
    }

    #[test]
    fn provisional_success_and_missing_statuses_are_not_candidates() {
        assert_eq!(
            best(&[
                r(180),
                r(200),
                Candidate {
                    status: 0,
                    received: false
                }
            ]),
            None
        );
        assert_eq!(best(&[]), None);
    }

    #[test]
    fn only_401_and_407_aggregate_challenges() {
        assert!(aggregates_challenges(401) && aggregates_challenges(407));
        assert!(!aggregates_challenges(403));
    }
}
