//! Why a lock looks stale ([design §4](crate::design#4-stale-classification)):
//! the vocabulary stale classification ([`crate::reclaim`]), holders and errors
//! share.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One reason a lock looks stale.
///
/// Serialized as its [name](Reason::as_str).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Reason {
    /// The holder is not alive.
    DeadPid,
    /// The pid is alive but is another process.
    RecycledPid,
    /// Our own pid and start time, but this process does not hold the lock.
    OrphanSelfPid,
    /// No usable pid.
    MissingPid,
    /// Unparsable payload or missing/invalid `createdAt`.
    Malformed,
    /// Alive but past its own lease.
    HoldExceeded,
    /// Older than `stale_after` but within its lease: reported, never acted on.
    TooOld,
    /// The payload's `createdAt` lies after the lock file's mtime or now (a
    /// clock stepped back, a remote host's skew, a hostile writer): the
    /// lease counts from the earlier of the two instead. Reported; the
    /// lease decides what happens.
    FutureCreatedAt,
    /// The payload's `maxHoldMs` is longer than any lease sessionlock writes
    /// ([`MAX_HOLD_CAP`](crate::config::MAX_HOLD_CAP)): the lease is taken to be that cap. Reported; the
    /// clamped lease decides what happens.
    LeaseClamped,
}

pub(crate) const ALL_REASONS: [Reason; 9] = [
    Reason::DeadPid,
    Reason::RecycledPid,
    Reason::OrphanSelfPid,
    Reason::MissingPid,
    Reason::Malformed,
    Reason::HoldExceeded,
    Reason::TooOld,
    Reason::FutureCreatedAt,
    Reason::LeaseClamped,
];

impl Reason {
    /// The name used in messages and JSON (`dead-pid`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DeadPid => "dead-pid",
            Reason::RecycledPid => "recycled-pid",
            Reason::OrphanSelfPid => "orphan-self-pid",
            Reason::MissingPid => "missing-pid",
            Reason::Malformed => "malformed",
            Reason::HoldExceeded => "hold-exceeded",
            Reason::TooOld => "too-old",
            Reason::FutureCreatedAt => "future-created-at",
            Reason::LeaseClamped => "lease-clamped",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Reason`]s.
///
/// Serialized as an array of reason names in a stable order
/// (`["dead-pid", "hold-exceeded"]`), the order of [`Reasons::iter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Reasons(u16);

impl Serialize for Reasons {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Reasons {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<Reason>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

impl Reasons {
    /// Whether `r` is in the set.
    pub fn contains(self, r: Reason) -> bool {
        self.0 & r.bit() != 0
    }
    /// Adds `r`.
    pub fn insert(&mut self, r: Reason) {
        self.0 |= r.bit();
    }
    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The reasons in a stable order.
    pub fn iter(self) -> impl Iterator<Item = Reason> {
        ALL_REASONS.into_iter().filter(move |r| self.contains(*r))
    }
}

impl FromIterator<Reason> for Reasons {
    fn from_iter<I: IntoIterator<Item = Reason>>(iter: I) -> Self {
        let mut s = Reasons::default();
        for r in iter {
            s.insert(r);
        }
        s
    }
}

impl fmt::Display for Reasons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.iter().map(Reason::as_str).collect();
        f.write_str(&names.join(","))
    }
}
