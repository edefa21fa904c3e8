//! `;name=value` parameter lists: header parameters (RFC 3261 §7.3.1 `generic-param`) and URI
//! parameters (§19.1.1 `uri-parameters`).
//!
//! One single-pass scanner ([`ParamScan`]) serves both: it walks the list once, yields each
//! parameter, notes where the list stops (end, or a `,` that starts the next list value) and
//! whether everything it saw was well formed, so the typed parsers get validation for free.

use crate::scan::{GENVAL, PARAM, TOKEN, is_lws, skip_lws, skip_quoted, span, unquote};
use crate::span::Sp;
use std::borrow::Cow;

/// A borrowed, unparsed parameter list such as `;branch=z9hG4bK776;rport` (the leading `;` is
/// optional). Lookups scan the list on each call; names compare case-insensitively
/// (RFC 3261 §7.3.1, §19.1.4). Empty items (`;;`) are skipped by the iterator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params<'a> {
    raw: &'a [u8],
    uri: bool,
}

/// One parameter: its name and, unless it is a flag (`;lr`), its raw value (quotes kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param<'a> {
    /// Parameter name as received.
    pub name: &'a [u8],
    /// Raw value (a quoted value keeps its quotes), `None` for a flag parameter.
    pub value: Option<&'a [u8]>,
}

impl<'a> Param<'a> {
    /// The value with surrounding quotes removed and quoted-pairs resolved.
    pub fn value_unquoted(&self) -> Option<Cow<'a, [u8]>> {
        self.value.map(unquote)
    }
}

impl<'a> Params<'a> {
    /// Wraps raw header-parameter text (with or without the leading `;`).
    pub const fn new(raw: &'a [u8]) -> Self {
        Params { raw, uri: false }
    }

    /// Wraps raw URI-parameter text (no LWS, no quoting, `paramchar` values).
    pub const fn new_uri(raw: &'a [u8]) -> Self {
        Params { raw, uri: true }
    }

    /// The raw text, exactly as received.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// True when there is no parameter.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Iterates the parameters in order.
    #[inline]
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter {
            scan: ParamScan::new(self.raw, 0, self.uri),
        }
    }

    /// First parameter named `name` (case-insensitive).
    #[inline]
    pub fn get(&self, name: &[u8]) -> Option<Param<'a>> {
        self.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Value of the first parameter named `name`; `None` when absent or a flag.
    #[inline]
    pub fn value(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.get(name).and_then(|p| p.value)
    }

    /// True when a parameter named `name` is present (with or without value).
    #[inline]
    pub fn contains(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// True when the whole list is well formed: no empty parameter, `token` names and
    /// `token / host / quoted-string` values (URI lists: `paramchar`s), nothing left over.
    pub fn is_valid(&self) -> bool {
        let mut scan = ParamScan::new(self.raw, 0, self.uri);
        for _ in scan.by_ref() {}
        scan.ok && scan.pos >= self.raw.len()
    }
}

impl<'a> IntoIterator for Params<'a> {
    type Item = Param<'a>;
    type IntoIter = ParamIter<'a>;
    fn into_iter(self) -> ParamIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Params`].
#[derive(Clone, Debug)]
pub struct ParamIter<'a> {
    scan: ParamScan<'a>,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Param<'a>;
    #[inline]
    fn next(&mut self) -> Option<Param<'a>> {
        self.scan.next()
    }
}

/// Single-pass scanner of `*( SEMI param )`, stopping at the end, at a top-level `,`, or at
/// the first malformed byte (then `ok` is false).
#[derive(Clone, Debug)]
pub(crate) struct ParamScan<'a> {
    s: &'a [u8],
    /// Where scanning stands; after exhaustion, where the list stopped.
    pub(crate) pos: usize,
    /// False once something malformed was seen (empty parameter, bad byte, open quote).
    pub(crate) ok: bool,
    uri: bool,
    first: bool,
    done: bool,
}

impl<'a> ParamScan<'a> {
    #[inline]
    pub(crate) fn new(s: &'a [u8], pos: usize, uri: bool) -> Self {
        ParamScan {
            s,
            pos,
            ok: true,
            uri,
            first: true,
            done: false,
        }
    }

    /// A scanner whose first parameter must be introduced by `;` too.
    #[inline]
    pub(crate) fn after(s: &'a [u8], pos: usize, uri: bool) -> Self {
        let mut p = Self::new(s, pos, uri);
        p.first = false;
        p
    }

    #[inline]
    fn skip_ws(&self, i: usize) -> usize {
        if self.uri { i } else { skip_lws(self.s, i) }
    }

    #[inline]
    fn stop(&mut self, at: usize, ok: bool) -> Option<Param<'a>> {
        self.pos = at;
        self.ok &= ok;
        self.done = true;
        None
    }
}

impl<'a> Iterator for ParamScan<'a> {
    type Item = Param<'a>;

    #[inline]
    fn next(&mut self) -> Option<Param<'a>> {
        if self.done {
            return None;
        }
        let s = self.s;
        loop {
            let mut i = self.skip_ws(self.pos);
            match s.get(i) {
                None => return self.stop(s.len(), true),
                Some(b',') if !self.uri => return self.stop(i, true),
                Some(b';') => i = self.skip_ws(i + 1),
                Some(_) if self.first => {}
                Some(_) => return self.stop(i, false),
            }
            self.first = false;
            let ns = i;
            i = span(s, i, if self.uri { PARAM } else { TOKEN });
            let name = &s[ns..i];
            if name.is_empty() {
                // ";;" or a stray byte where a name should be.
                self.ok = false;
                match s.get(i) {
                    Some(b';') => {
                        self.pos = i;
                        continue;
                    }
                    Some(b',') if !self.uri => return self.stop(i, false),
                    None => return self.stop(i, false),
                    Some(_) => return self.stop(i, false),
                }
            }
            let k = self.skip_ws(i);
            if s.get(k) != Some(&b'=') {
                self.pos = i;
                return Some(Param { name, value: None });
            }
            let vs = self.skip_ws(k + 1);
            let ve = if !self.uri && s.get(vs) == Some(&b'"') {
                match skip_quoted(s, vs) {
                    Some(e) => e,
                    None => return self.stop(s.len(), false),
                }
            } else {
                // gen-value = token / host / quoted-string; host adds ':' '[' ']'.
                span(s, vs, if self.uri { PARAM } else { GENVAL })
            };
            if ve == vs {
                self.ok = false;
            }
            self.pos = ve;
            // What follows must be a separator (checked on the next call) or LWS.
            if let Some(&c) = s.get(ve)
                && !matches!(c, b';' | b',')
                && (self.uri || !is_lws(c))
            {
                self.ok = false;
                self.done = true;
            }
            return Some(Param {
                name,
                value: Some(&s[vs..ve]),
            });
        }
    }
}

/// A parameter name a parser looks for, as [`canonical_params`] recognises it from one
/// 8-byte load: `name=` of at most 7 bytes (letters only in the name, matched in any case).
#[derive(Clone, Copy)]
pub(crate) struct KnownName {
    /// `name=` (lower case), little-endian.
    word: u64,
    /// The bytes of `name=`.
    mask: u64,
    /// The letter bytes (where case is folded).
    fold: u64,
    len: usize,
}

impl KnownName {
    pub(crate) const fn new(name: &[u8]) -> KnownName {
        assert!(name.len() < 8);
        let mut word = 0u64;
        let mut fold = 0u64;
        let mut i = 0;
        while i < name.len() {
            word |= ((name[i] | 0x20) as u64) << (8 * i);
            fold |= 0x20u64 << (8 * i);
            i += 1;
        }
        word |= (b'=' as u64) << (8 * name.len());
        KnownName {
            word,
            mask: u64::MAX >> (8 * (7 - name.len())),
            fold,
            len: name.len(),
        }
    }
}

/// The common shape of a header parameter list: `*( ";" token [ "=" gen-value ] )` with no
/// LWS, no quoted value and no empty parameter, starting at `j` (at a `;`, a `,` or the end).
/// Calls `param(name, value, value_is_token, known)` for each, in order (`known`: the index in
/// `known` of a `name=` recognised without scanning the name), and returns where the list
/// stops (the end or a `,`). `None` for anything else: then [`ParamScan::after`] must be used
/// (for the lists accepted here it yields the same parameters and stops at the same place,
/// with `ok`).
#[inline(always)]
pub(crate) fn canonical_params(
    v: &[u8],
    mut j: usize,
    known: &[KnownName],
    mut param: impl FnMut(Sp, Option<Sp>, bool, Option<usize>),
) -> Option<usize> {
    loop {
        match v.get(j) {
            Some(b';') => {}
            None | Some(b',') => return Some(j),
            Some(_) => return None,
        }
        let ns = j + 1;
        // A well-known `name=`: one load and compare instead of a scan of the name. Letters
        // match only letters, so the name is the same token a scan would give.
        let mut hit = None;
        if ns + 8 <= v.len() {
            let w = crate::scan::load8(v, ns);
            for (k, n) in known.iter().enumerate() {
                if (w | n.fold) & n.mask == n.word {
                    hit = Some((k, ns + n.len));
                    break;
                }
            }
        }
        let ne = match hit {
            Some((_, ne)) => ne,
            None => span(v, ns, TOKEN),
        };
        if ne == ns {
            return None;
        }
        match v.get(ne) {
            Some(b'=') => {
                // gen-value: a token, or a host with the ':' '[' ']' of an IPv6 reference.
                let te = span(v, ne + 1, TOKEN);
                let ve = match v.get(te) {
                    Some(b':' | b'[' | b']') => span(v, te, GENVAL),
                    _ => te,
                };
                if ve == ne + 1 {
                    return None;
                }
                param(
                    Sp::new(ns, ne),
                    Some(Sp::new(ne + 1, ve)),
                    te == ve,
                    hit.map(|(k, _)| k),
                );
                j = ve;
            }
            None | Some(b';' | b',') => {
                param(Sp::new(ns, ne), None, false, None);
                j = ne;
            }
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_found_case_insensitively_with_lws_around_equals() {
        let p = Params::new(b" ;   tag    = 1918181833n ; LR;x=\"a;b\"");
        assert_eq!(p.value(b"TAG"), Some(&b"1918181833n"[..]));
        assert!(p.contains(b"lr"));
        assert_eq!(p.value(b"lr"), None);
        assert_eq!(p.value(b"x"), Some(&b"\"a;b\""[..]));
        assert_eq!(
            p.get(b"x").and_then(|p| p.value_unquoted()).as_deref(),
            Some(&b"a;b"[..])
        );
        assert_eq!(p.iter().count(), 3);
        assert!(p.is_valid());
    }

    #[test]
    fn empty_items_are_skipped_but_make_the_list_invalid() {
        let p = Params::new(b";;;a;;");
        assert_eq!(p.iter().count(), 1);
        assert!(!p.is_valid());
        assert!(Params::new(b";;").is_empty());
        assert!(Params::new(b"").is_empty());
        assert!(Params::new(b"").is_valid());
    }

    #[test]
    fn folded_parameter_values_are_trimmed() {
        let p = Params::new(b"; branch=\r\n z9hG4bK30239");
        assert_eq!(p.value(b"branch"), Some(&b"z9hG4bK30239"[..]));
    }

    #[test]
    fn scanning_stops_at_a_comma_outside_quotes() {
        let mut s = ParamScan::new(b";a=\"x,y\";b , next", 0, false);
        assert_eq!(s.by_ref().count(), 2);
        assert!(s.ok);
        assert_eq!(s.pos, 11);
    }

    #[test]
    fn bad_bytes_and_open_quotes_make_the_list_invalid() {
        assert!(!Params::new(b";a=b/c").is_valid());
        assert!(!Params::new(b";a=\"open").is_valid());
        assert!(!Params::new(b";a=").is_valid());
        assert!(Params::new(b";received=[2001:db8::1]").is_valid());
    }

    #[test]
    fn uri_params_allow_paramchars_and_no_lws() {
        let p = Params::new_uri(b";n%61me=v%61lue%25%34%31;x=a/b:c;lr");
        assert_eq!(p.value(b"x"), Some(&b"a/b:c"[..]));
        assert!(p.contains(b"lr"));
        assert!(p.is_valid());
        assert!(!Params::new_uri(b"; lr").is_valid());
    }
}
