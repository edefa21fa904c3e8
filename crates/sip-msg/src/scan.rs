//! Byte-level scanners shared by every parser of the crate.
//!
//! Everything here works on `&[u8]` and never panics: every index is checked or comes from a
//! bounded loop. Whitespace inside a header value may include the CRLF of a folded line
//! (RFC 3261 §7.3.1: `LWS = [*WSP CRLF] 1*WSP`); framing already guarantees that a CR or LF
//! inside a value is followed by SP/HT, so the scanners treat CR, LF, SP and HT alike as LWS.

use std::borrow::Cow;

/// Byte classes, one bit per class, indexed by byte value.
pub(crate) const TOKEN: u16 = 1;
/// `word` (RFC 3261 §25.1) minus `token`: used by Call-ID.
pub(crate) const WORD: u16 = 2;
/// `unreserved` / `escaped` lead / `user-unreserved` characters allowed in a SIP URI user part.
pub(crate) const USER: u16 = 4;
/// `paramchar` (RFC 3261 §25.1) of URI parameters.
pub(crate) const PARAM: u16 = 8;
/// `hnv-unreserved` / `unreserved` of URI headers.
pub(crate) const HNV: u16 = 16;
/// Characters allowed in a password.
pub(crate) const PASSWORD: u16 = 32;
/// Hostname characters (alphanum, `-`, `.`).
pub(crate) const HOST: u16 = 64;
/// `gen-value` characters outside quotes: `token` plus the `:` `[` `]` of an IPv6 host.
pub(crate) const GENVAL: u16 = 128;
/// ASCII digits.
pub(crate) const DIGIT: u16 = 256;
/// ASCII digits and `.` (what a dotted-quad IPv4 address is made of).
pub(crate) const DIGITDOT: u16 = 512;
/// [`USER`] without `%`: a user part with no escape to check.
pub(crate) const USER_NP: u16 = 1024;
/// [`PARAM`] without `%`: a URI parameter with no escape to check.
pub(crate) const PARAM_NP: u16 = 2048;

const fn build_classes() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let alnum = c.is_ascii_alphanumeric();
        // mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
        let mark = matches!(
            c,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        );
        let unreserved = alnum || mark;
        let mut v = 0;
        if alnum
            || matches!(
                c,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            )
        {
            v |= TOKEN | WORD;
        }
        if matches!(
            c,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        ) {
            v |= WORD;
        }
        if unreserved
            || c == b'%'
            || matches!(c, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
        {
            v |= USER;
        }
        if unreserved || c == b'%' || matches!(c, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$') {
            v |= PARAM;
        }
        if unreserved || c == b'%' || matches!(c, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$') {
            v |= HNV;
        }
        if unreserved || c == b'%' || matches!(c, b'&' | b'=' | b'+' | b'$' | b',') {
            v |= PASSWORD;
        }
        if alnum || c == b'-' || c == b'.' {
            v |= HOST;
        }
        if v & TOKEN != 0 || matches!(c, b':' | b'[' | b']') {
            v |= GENVAL;
        }
        if c.is_ascii_digit() {
            v |= DIGIT | DIGITDOT;
        }
        if c == b'.' {
            v |= DIGITDOT;
        }
        if v & USER != 0 && c != b'%' {
            v |= USER_NP;
        }
        if v & PARAM != 0 && c != b'%' {
            v |= PARAM_NP;
        }
        t[i] = v;
        i += 1;
    }
    t
}

static CLASSES: [u16; 256] = build_classes();

#[inline(always)]
pub(crate) fn class(b: u8) -> u16 {
    CLASSES[b as usize]
}

/// Index of the first byte at or after `i` whose class has none of the bits of `mask`
/// (or `s.len()`). Unrolled by eight: one bounds check, then a load, a table test and a
/// branch per byte.
#[inline(always)]
pub(crate) fn span(s: &[u8], mut i: usize, mask: u16) -> usize {
    while let Some(q) = s.get(i..i + 8) {
        for (k, &c) in q.iter().enumerate() {
            if class(c) & mask == 0 {
                return i + k;
            }
        }
        i += 8;
    }
    while i < s.len() && class(s[i]) & mask != 0 {
        i += 1;
    }
    i
}

/// `token` character (RFC 3261 §25.1).
#[inline]
pub(crate) fn is_token_byte(b: u8) -> bool {
    class(b) & TOKEN != 0
}

/// Character allowed in a URI header name or value.
#[inline]
pub(crate) fn is_hnv_byte(b: u8) -> bool {
    class(b) & HNV != 0
}

/// Hostname character.
#[inline]
pub(crate) fn is_host_byte(b: u8) -> bool {
    class(b) & HOST != 0
}

pub(crate) const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bit 7 of each byte of the result is set where `w` has byte `pat` (`pat` is the byte
/// repeated 8 times). The lowest set bit is exact; higher ones may be false positives.
#[inline(always)]
pub(crate) fn has_byte(w: u64, pat: u64) -> u64 {
    let x = w ^ pat;
    x.wrapping_sub(LO) & !x & HI
}

/// Little-endian load of 8 bytes at `i` (caller guarantees `i + 8 <= s.len()`).
#[inline(always)]
pub(crate) fn load8(s: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(src) = s.get(i..i + 8) {
        a.copy_from_slice(src);
    }
    u64::from_le_bytes(a)
}

/// Haystacks at least this long go to `memchr`'s vectorised search; shorter ones use a SWAR
/// loop without call and dispatch overhead (most SIP tokens and lines are short).
const MEMCHR_MIN: usize = 96;

/// Position of the first `c` in `s` (SWAR for short haystacks, `memchr` for long ones).
#[inline]
pub(crate) fn find_byte(s: &[u8], c: u8) -> Option<usize> {
    if s.len() >= MEMCHR_MIN {
        return memchr::memchr(c, s);
    }
    let pat = LO.wrapping_mul(u64::from(c));
    let mut i = 0;
    while i + 8 <= s.len() {
        let t = has_byte(load8(s, i), pat);
        if t != 0 {
            return Some(i + (t.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    while i < s.len() {
        if s[i] == c {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Position of the first `a` or `b` in `s`.
#[inline]
pub(crate) fn find_byte2(s: &[u8], a: u8, b: u8) -> Option<usize> {
    if s.len() >= MEMCHR_MIN {
        return memchr::memchr2(a, b, s);
    }
    let (pa, pb) = (LO.wrapping_mul(u64::from(a)), LO.wrapping_mul(u64::from(b)));
    let mut i = 0;
    while i + 8 <= s.len() {
        let w = load8(s, i);
        let t = has_byte(w, pa) | has_byte(w, pb);
        if t != 0 {
            return Some(i + (t.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    while i < s.len() {
        if s[i] == a || s[i] == b {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Position of the first `a`, `b` or `c` in `s`.
#[inline]
pub(crate) fn find_byte3(s: &[u8], a: u8, b: u8, c: u8) -> Option<usize> {
    if s.len() >= MEMCHR_MIN {
        return memchr::memchr3(a, b, c, s);
    }
    let (pa, pb, pc) = (
        LO.wrapping_mul(u64::from(a)),
        LO.wrapping_mul(u64::from(b)),
        LO.wrapping_mul(u64::from(c)),
    );
    let mut i = 0;
    while i + 8 <= s.len() {
        let w = load8(s, i);
        let t = has_byte(w, pa) | has_byte(w, pb) | has_byte(w, pc);
        if t != 0 {
            return Some(i + (t.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    while i < s.len() {
        let x = s[i];
        if x == a || x == b || x == c {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Finds the `:` ending a header field name in the first 24 bytes at `pos`, stopping at a
/// line feed. Returns the colon offset from `pos` and the three raw 8-byte words read, or
/// `None` when a line feed comes first, the name is longer, or the buffer ends too soon (the
/// caller then takes the slow path).
#[inline(always)]
pub(crate) fn name_colon(b: &[u8], pos: usize) -> Option<(usize, [u64; 3])> {
    const COLON: u64 = LO.wrapping_mul(b':' as u64);
    const NL: u64 = LO.wrapping_mul(b'\n' as u64);
    let mut words = [0u64; 3];
    let mut j = 0;
    while j < 3 {
        let at = pos + j * 8;
        if at + 8 > b.len() {
            return None;
        }
        let w = load8(b, at);
        words[j] = w;
        let t = has_byte(w, COLON) | has_byte(w, NL);
        if t != 0 {
            let k = (t.trailing_zeros() / 8) as usize;
            return (b.get(at + k) == Some(&b':')).then_some((j * 8 + k, words));
        }
        j += 1;
    }
    None
}

/// Position of the first line feed at or after `i` in `s`, or `s.len()` when there is none.
///
/// Sixteen bytes per step: the "any byte is LF" test is written so that the compiler turns it
/// into one vector compare and mask (no `unsafe`, no intrinsics), then SWAR finds the byte.
/// Cheaper than a `memchr` call on the 20-100 byte spans of header lines.
#[inline(always)]
pub(crate) fn find_nl(s: &[u8], i: usize) -> usize {
    const NL: u64 = LO.wrapping_mul(b'\n' as u64);
    let Some(rest) = s.get(i..) else {
        return s.len();
    };
    let mut chunks = rest.chunks_exact(16);
    let mut at = i;
    for ch in chunks.by_ref() {
        if ch.iter().fold(false, |a, &x| a | (x == b'\n')) {
            let t = has_byte(load8(ch, 0), NL);
            if t != 0 {
                return at + (t.trailing_zeros() / 8) as usize;
            }
            let t = has_byte(load8(ch, 8), NL);
            return at + 8 + (t.trailing_zeros() / 8) as usize;
        }
        at += 16;
    }
    match chunks.remainder().iter().position(|&x| x == b'\n') {
        Some(k) => at + k,
        None => s.len(),
    }
}

/// [`find_byte`] with memchr's argument order.
#[inline]
pub(crate) fn find_byte_at(c: u8, s: &[u8]) -> Option<usize> {
    find_byte(s, c)
}

/// True when `s` is a non-empty RFC 3261 `token`.
#[inline]
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && span(s, 0, TOKEN) == s.len()
}

/// Linear whitespace byte inside a header value: SP, HT, or the CR/LF of a folded line.
#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Strips leading and trailing linear whitespace (SP, HT, CR, LF).
#[inline]
pub fn trim_lws(s: &[u8]) -> &[u8] {
    let mut a = 0;
    let mut b = s.len();
    while a < b && is_lws(s[a]) {
        a += 1;
    }
    while b > a && is_lws(s[b - 1]) {
        b -= 1;
    }
    &s[a..b]
}

/// Index of the first non-LWS byte at or after `i` (or `s.len()`).
#[inline]
pub(crate) fn skip_lws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_lws(s[i]) {
        i += 1;
    }
    i
}

/// True when `s` contains linear whitespace anywhere.
#[inline]
pub(crate) fn has_lws(s: &[u8]) -> bool {
    s.iter().any(|&b| is_lws(b))
}

/// Given `s[start] == b'"'`, returns the index just after the closing quote, honouring
/// `quoted-pair` (`\` followed by any byte). `None` when the quote is not closed.
#[inline]
pub(crate) fn skip_quoted(s: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < s.len() {
        match find_byte2(&s[i..], b'"', b'\\') {
            None => return None,
            Some(off) => {
                let j = i + off;
                if s[j] == b'"' {
                    return Some(j + 1);
                }
                // quoted-pair: skip the backslash and the escaped byte.
                i = j + 2;
            }
        }
    }
    None
}

/// Finds the first `sep` that is outside a quoted string and outside `<...>`.
///
/// Returns `Err(())` when a quoted string or an angle bracket is not closed.
#[inline]
pub(crate) fn find_top_level(s: &[u8], sep: u8) -> Result<Option<usize>, ()> {
    let mut i = 0;
    while i < s.len() {
        let Some(off) = find_byte3(&s[i..], sep, b'"', b'<') else {
            return Ok(None);
        };
        let j = i + off;
        let c = s[j];
        if c == sep {
            return Ok(Some(j));
        } else if c == b'"' {
            i = skip_quoted(s, j).ok_or(())?;
        } else {
            // '<': skip to the matching '>' (URIs cannot nest angle brackets).
            match find_byte(&s[j + 1..], b'>') {
                Some(e) => i = j + 1 + e + 1,
                None => return Err(()),
            }
        }
    }
    Ok(None)
}

/// Splits a header value on `sep` outside quoted strings and `<...>`, yielding trimmed items
/// (empty items included). An unterminated quote or `<` yields the rest as a final item.
#[derive(Clone, Debug)]
pub(crate) struct SplitTop<'a> {
    rest: Option<&'a [u8]>,
    sep: u8,
}

impl<'a> SplitTop<'a> {
    pub(crate) fn new(s: &'a [u8], sep: u8) -> Self {
        SplitTop { rest: Some(s), sep }
    }
}

impl<'a> Iterator for SplitTop<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let s = self.rest?;
        match find_top_level(s, self.sep) {
            Ok(Some(i)) => {
                self.rest = Some(&s[i + 1..]);
                Some(trim_lws(&s[..i]))
            }
            _ => {
                self.rest = None;
                Some(trim_lws(s))
            }
        }
    }
}

/// Iterates the comma-separated values of a list header value, skipping empty items.
///
/// Commas inside quoted strings and `<...>` do not split (RFC 3261 §7.3.1).
#[derive(Clone, Debug)]
pub struct CommaValues<'a> {
    inner: SplitTop<'a>,
}

impl<'a> CommaValues<'a> {
    /// Splits `value` (one header field value).
    pub fn new(value: &'a [u8]) -> Self {
        CommaValues {
            inner: SplitTop::new(value, b','),
        }
    }
}

impl<'a> Iterator for CommaValues<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        self.inner.by_ref().find(|v| !v.is_empty())
    }
}

/// Parses a run of ASCII digits as `u64`, saturating at `u64::MAX`; `None` if `s` is empty or
/// contains a non-digit.
#[inline]
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.saturating_mul(10).saturating_add(u64::from(d));
    }
    Some(v)
}

/// Parses ASCII digits into a `u32`; `None` when empty, non-digit or above `u32::MAX`.
#[inline]
pub(crate) fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.len() > 10 {
        // Leading zeros are legal ("0009"), so only reject when the value overflows.
        let v = parse_u64(s)?;
        return u32::try_from(v).ok();
    }
    let v = parse_u64(s)?;
    u32::try_from(v).ok()
}

/// Removes the surrounding double quotes of a `quoted-string` and resolves `quoted-pair`s.
///
/// Input that is not quoted is returned unchanged (borrowed). Never allocates when the string
/// has no backslash.
pub fn unquote(s: &[u8]) -> Cow<'_, [u8]> {
    let s = trim_lws(s);
    if s.len() < 2 || s[0] != b'"' || s[s.len() - 1] != b'"' {
        return Cow::Borrowed(s);
    }
    let inner = &s[1..s.len() - 1];
    if find_byte(inner, b'\\').is_none() {
        return Cow::Borrowed(inner);
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == b'\\' && i + 1 < inner.len() {
            out.push(inner[i + 1]);
            i += 2;
        } else {
            out.push(inner[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// Decodes `%HH` escapes (RFC 3261 §25.1 `escaped`). Invalid escapes (e.g. `%ZK`) are kept
/// as they are. Borrows when there is nothing to decode. The result may contain NUL bytes.
pub fn percent_decode(s: &[u8]) -> Cow<'_, [u8]> {
    let Some(first) = find_byte(s, b'%') else {
        return Cow::Borrowed(s);
    };
    let mut out = Vec::with_capacity(s.len());
    out.extend_from_slice(&s[..first]);
    let mut i = first;
    while i < s.len() {
        let b = s[i];
        if b == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex_val(s[i + 1]), hex_val(s[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    Cow::Owned(out)
}

#[inline]
pub(crate) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks that every `%` in `s` starts a valid `%HH` escape.
#[inline]
pub(crate) fn escapes_valid(s: &[u8]) -> bool {
    let mut i = 0;
    while let Some(off) = find_byte(&s[i..], b'%') {
        let j = i + off;
        match (s.get(j + 1), s.get(j + 2)) {
            (Some(&h), Some(&l)) if hex_val(h).is_some() && hex_val(l).is_some() => i = j + 3,
            _ => return false,
        }
    }
    true
}

/// Offset of `part` inside `whole`, when `part` is a sub-slice of it.
#[inline]
pub(crate) fn offset_in(whole: &[u8], part: &[u8]) -> Option<usize> {
    let w = whole.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    if p >= w && p + part.len() <= w + whole.len() {
        Some(p - w)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_lws_strips_folding_and_tabs_on_both_sides() {
        assert_eq!(trim_lws(b"\r\n \t a b \t\r\n "), b"a b");
        assert_eq!(trim_lws(b"   "), b"");
        assert_eq!(trim_lws(b""), b"");
    }

    #[test]
    fn comma_values_ignore_commas_inside_quotes_and_angle_brackets() {
        let v: Vec<&[u8]> =
            CommaValues::new(b"\"a, b\" <sip:x@y;p=1,2>;q=1 , <sip:z>,, c").collect();
        assert_eq!(
            v,
            vec![
                &b"\"a, b\" <sip:x@y;p=1,2>;q=1"[..],
                &b"<sip:z>"[..],
                &b"c"[..]
            ]
        );
    }

    #[test]
    fn comma_values_handle_escaped_quotes() {
        let v: Vec<&[u8]> = CommaValues::new(br#""a\",b" <sip:x>, d"#).collect();
        assert_eq!(v, vec![&br#""a\",b" <sip:x>"#[..], &b"d"[..]]);
    }

    #[test]
    fn unterminated_quote_yields_the_rest_as_one_item() {
        let v: Vec<&[u8]> = CommaValues::new(b"a, \"b, c").collect();
        assert_eq!(v, vec![&b"a"[..], &b"\"b, c"[..]]);
    }

    #[test]
    fn percent_decode_keeps_invalid_escapes_and_decodes_nul() {
        assert_eq!(&*percent_decode(b"null-%00-null"), b"null-\0-null");
        assert_eq!(&*percent_decode(b"%Z%45"), b"%ZE");
        assert_eq!(&*percent_decode(b"abc%4"), b"abc%4");
        assert_eq!(&*percent_decode(b"%"), b"%");
        assert!(matches!(percent_decode(b"plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn unquote_resolves_quoted_pairs() {
        assert_eq!(&*unquote(br#""J Rosenberg \\\"""#), br#"J Rosenberg \""#);
        assert_eq!(&*unquote(b"token"), b"token");
        assert_eq!(&*unquote(b"\""), b"\"");
    }

    #[test]
    fn parse_u32_accepts_leading_zeros_and_rejects_overflow() {
        assert_eq!(parse_u32(b"0009"), Some(9));
        assert_eq!(parse_u32(b"00000000000000000001"), Some(1));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"-1"), None);
        assert_eq!(parse_u32(b""), None);
    }

    #[test]
    fn escapes_valid_detects_truncated_escapes() {
        assert!(escapes_valid(b"a%20b"));
        assert!(!escapes_valid(b"a%2"));
        assert!(!escapes_valid(b"%ZK"));
    }

    #[test]
    fn swar_searches_agree_with_a_plain_scan() {
        let hay: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 95, 96, 97, 300] {
            let s = &hay[..len];
            for c in [0u8, 7, 14, 200, 250, 255] {
                let want = s.iter().position(|&b| b == c);
                assert_eq!(find_byte(s, c), want);
                let want2 = s.iter().position(|&b| b == c || b == 14);
                assert_eq!(find_byte2(s, c, 14), want2);
                let want3 = s.iter().position(|&b| b == c || b == 14 || b == 21);
                assert_eq!(find_byte3(s, c, 14, 21), want3);
            }
        }
    }

    #[test]
    fn token_classes_follow_rfc3261() {
        assert!(is_token(b"!interesting-Method0123456789_*+`.%indeed'~"));
        assert!(!is_token(b"a b"));
        assert!(!is_token(b""));
        assert!(span(b"<", 0, WORD) == 1 && !is_token_byte(b'<'));
    }
}
