//! `;name=value` parameter lists: header parameters (RFC 3261 §7.3.1 `generic-param`) and URI
//! parameters (§19.1.1 `uri-parameters`).

use crate::scan::{SplitTop, trim_lws, unquote};
use std::borrow::Cow;

/// A borrowed, unparsed parameter list such as `;branch=z9hG4bK776;rport` (the leading `;` is
/// optional). Lookups scan the list on each call; names compare case-insensitively
/// (RFC 3261 §7.3.1, §19.1.4). Empty items (`;;`) are skipped by the iterator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params<'a> {
    raw: &'a [u8],
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

    #[inline]
    fn parse(item: &'a [u8]) -> Param<'a> {
        match memchr::memchr(b'=', item) {
            Some(eq) => Param {
                name: trim_lws(&item[..eq]),
                value: Some(trim_lws(&item[eq + 1..])),
            },
            None => Param {
                name: item,
                value: None,
            },
        }
    }
}

impl<'a> Params<'a> {
    /// Wraps raw parameter text (with or without the leading `;`).
    pub const fn new(raw: &'a [u8]) -> Self {
        Params { raw }
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
    pub fn iter(&self) -> ParamIter<'a> {
        let raw = match self.raw.first() {
            Some(b';') => &self.raw[1..],
            _ => self.raw,
        };
        ParamIter {
            inner: SplitTop::new(raw, b';'),
        }
    }

    /// First parameter named `name` (case-insensitive).
    #[inline]
    pub fn get(&self, name: &[u8]) -> Option<Param<'a>> {
        // Cheap pre-filter: most lists do not contain the name at all.
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
    inner: SplitTop<'a>,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Param<'a>;
    #[inline]
    fn next(&mut self) -> Option<Param<'a>> {
        loop {
            let item = self.inner.next()?;
            if !item.is_empty() {
                return Some(Param::parse(item));
            }
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
    }

    #[test]
    fn empty_items_are_skipped() {
        let p = Params::new(b";;;a;;");
        assert_eq!(p.iter().count(), 1);
        assert!(Params::new(b";;").is_empty());
        assert!(Params::new(b"").is_empty());
    }

    #[test]
    fn folded_parameter_values_are_trimmed() {
        let p = Params::new(b"; branch=\r\n z9hG4bK30239");
        assert_eq!(p.value(b"branch"), Some(&b"z9hG4bK30239"[..]));
    }
}
