//! [`Sp`]: a compact byte range that typed values ([`Via`](crate::Via),
//! [`NameAddr`](crate::NameAddr)) and the message's routing cache keep instead of slices, so
//! that a parsed value is small to copy and can be rebuilt from the message in O(1).

/// A byte range relative to the start of some slice; [`Sp::NONE`] when absent.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Sp {
    pub(crate) s: u32,
    pub(crate) e: u32,
}

impl Sp {
    /// Absent (an `Option::None` without the extra word).
    pub(crate) const NONE: Sp = Sp {
        s: u32::MAX,
        e: u32::MAX,
    };

    /// `s..e`; callers guarantee `s <= e < u32::MAX`.
    #[inline(always)]
    pub(crate) const fn new(s: usize, e: usize) -> Sp {
        Sp {
            s: s as u32,
            e: e as u32,
        }
    }

    #[inline(always)]
    pub(crate) const fn is_some(self) -> bool {
        self.s != u32::MAX
    }

    /// The bytes of `base` in the range (empty when absent or out of `base`).
    #[inline(always)]
    pub(crate) fn of(self, base: &[u8]) -> &[u8] {
        base.get(self.s as usize..self.e as usize).unwrap_or(&[])
    }

    /// The bytes of `base` in the range, `None` when absent.
    #[inline(always)]
    pub(crate) fn opt(self, base: &[u8]) -> Option<&[u8]> {
        if self.is_some() {
            Some(self.of(base))
        } else {
            None
        }
    }

    /// The same range seen from `by` bytes further (absent stays absent).
    #[inline(always)]
    pub(crate) const fn rebase(self, by: usize) -> Sp {
        if self.is_some() {
            Sp {
                s: self.s - by as u32,
                e: self.e - by as u32,
            }
        } else {
            self
        }
    }

    /// Length in bytes (0 when absent).
    #[inline(always)]
    pub(crate) const fn len(self) -> usize {
        if self.is_some() {
            (self.e - self.s) as usize
        } else {
            0
        }
    }
}

/// Offsets are kept as `u32`: values this long or longer are not parsed (a message never is,
/// [`SipMessage::parse_lenient`](crate::SipMessage::parse_lenient) refuses it).
pub(crate) const MAX_VALUE: usize = u32::MAX as usize - 2;
