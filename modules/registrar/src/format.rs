//! Small text formats of the replies: the Contact values of a 200 OK, q-values, the `Date`
//! header (RFC 3261 §20.17, RFC 1123 date in GMT), the received URI.

use std::io::Write as _;

use geosip_usrloc::{Binding, Received, Transport};

/// `q` in per mille as a qvalue: `1`, `0.5`, `0.125`, `0`.
pub fn qvalue(q: u16) -> String {
    match q {
        q if q >= 1000 => "1".into(),
        0 => "0".into(),
        q => {
            let s = format!("0.{q:03}");
            s.trim_end_matches('0').to_string()
        }
    }
}

/// One Contact value of a 200 OK: `<uri>;expires=N[;q=X][;+sip.instance="..."][;reg-id=N]`.
/// `q` is written only when it is not 1.0 (RFC 3261 default priority).
pub fn contact_value(b: &Binding, now_s: u64, out: &mut Vec<u8>) {
    out.push(b'<');
    out.extend_from_slice(&b.contact);
    out.push(b'>');
    let _ = write!(out, ";expires={}", b.expires.saturating_sub(now_s).max(1));
    if b.q < 1000 {
        out.extend_from_slice(b";q=");
        out.extend_from_slice(qvalue(b.q).as_bytes());
    }
    if !b.instance.is_empty() {
        out.extend_from_slice(b";+sip.instance=\"");
        for &c in b.instance.iter() {
            if c == b'"' || c == b'\\' {
                out.push(b'\\');
            }
            out.push(c);
        }
        out.push(b'"');
        if b.reg_id != 0 {
            let _ = write!(out, ";reg-id={}", b.reg_id);
        }
    }
}

/// RFC 1123 date in GMT (`Sun, 06 Nov 1994 08:49:37 GMT`) for unix seconds `t`.
///
/// Every 200 to a REGISTER carries one; it is formatted once per second and thread.
pub fn http_date(t: u64) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    LAST.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != t || c.1.is_empty() {
            *c = (t, format_http_date(t));
        }
        c.1.clone()
    })
}

fn format_http_date(t: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = t / 86_400;
    let secs = t % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1).clamp(0, 11) as usize],
        y,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The URI that reaches the source of a REGISTER: `sip:IP:PORT[;transport=tcp]` (Kamailio's
/// received URI).
pub fn received_uri(r: &Received) -> String {
    let t = match r.transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
        Transport::Sctp => ";transport=sctp",
        Transport::Ws => ";transport=ws",
        Transport::Wss => ";transport=wss",
    };
    format!("sip:{}{}", r.source, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qvalues_and_dates_are_written_as_the_rfcs_spell_them() {
        assert_eq!(qvalue(1000), "1");
        assert_eq!(qvalue(500), "0.5");
        assert_eq!(qvalue(125), "0.125");
        assert_eq!(qvalue(10), "0.01");
        assert_eq!(qvalue(0), "0");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn a_contact_value_carries_expires_q_and_the_outbound_keys() {
        let b = Binding {
            contact: "sip:a@192.0.2.1".into(),
            expires: 1100,
            q: 700,
            instance: "<urn:uuid:1>".into(),
            reg_id: 2,
            ..Binding::default()
        };
        let mut v = Vec::new();
        contact_value(&b, 1000, &mut v);
        assert_eq!(
            v,
            b"<sip:a@192.0.2.1>;expires=100;q=0.7;+sip.instance=\"<urn:uuid:1>\";reg-id=2"
        );
        let r = Received {
            transport: Transport::Tcp,
            source: "[2001:db8::1]:5070".parse().unwrap(),
            local: "192.0.2.9:5060".parse().unwrap(),
        };
        assert_eq!(received_uri(&r), "sip:[2001:db8::1]:5070;transport=tcp");
    }
}
