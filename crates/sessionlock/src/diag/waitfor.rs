//! Wait-for chains across processes
//! ([design §9.4](crate::design#94-the-doctor-and-verify-fs)): from each
//! session's holder and queue, the cycles among processes that no one of
//! them can break before a lease or a budget ends. Process A holds S1 and
//! waits in line for S2 while process B holds S2 and waits for S1: each
//! waits for the other, and both wait until A's or B's lease ends (the
//! holder is then reclaimed or revoked) or a waiter's budget runs out.
//!
//! Read-only, for any backend: the edges come from
//! [`LockStatus::contention`]'s queue, waiter → holder of the session it
//! waits for. A process is its host and pid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::diag::status::LockStatus;
use crate::payload::format_time;
use crate::sys;

/// One link of a cycle: a process waiting in line for a session that
/// another process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Link {
    /// The waiting process.
    pub waiter_pid: Option<u32>,
    /// Its host.
    pub waiter_host: Option<String>,
    /// The lane it waits in.
    pub waiter_lane: Option<String>,
    /// When the waiter gives up, if its record says.
    pub waiter_deadline: Option<SystemTime>,
    /// The session it waits for.
    pub session: PathBuf,
    /// The session's holder.
    pub holder_pid: Option<u32>,
    /// Its host.
    pub holder_host: Option<String>,
    /// The lane it holds the session in.
    pub holder_lane: Option<String>,
    /// When the holder's lease ends.
    pub lease_end: Option<SystemTime>,
}

/// A cycle of processes each waiting for the next: none of them moves
/// until [`Cycle::ends`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cycle {
    /// The links in order: each link's holder is the next link's waiter,
    /// the last link's holder the first link's waiter.
    pub links: Vec<Link>,
    /// The earliest moment that breaks the cycle: the first lease in it to
    /// end, or a waiter's deadline if that comes first; `None` when none is
    /// known (then it lasts until someone acts).
    pub ends: Option<SystemTime>,
}

/// At most this many cycles are reported (each is a finding).
const MAX_CYCLES: usize = 16;
/// At most this many steps are taken looking for them.
const MAX_STEPS: usize = 100_000;

type Node = (String, u32);

fn node(host: Option<&str>, pid: Option<u32>) -> Option<Node> {
    Some((host.unwrap_or(sys::hostname()).to_owned(), pid?))
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
}

fn lane_text(lane: Option<&str>) -> String {
    lane.map_or_else(String::new, |l| format!(" (lane {l})"))
}

fn name(session: &Path) -> String {
    session.file_name().map_or_else(
        || session.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

impl Cycle {
    /// One sentence naming every link and when the cycle ends, for people
    /// (not escaped: lanes are the processes' own strings).
    pub fn describe(&self) -> String {
        let links: Vec<String> = self
            .links
            .iter()
            .map(|l| {
                format!(
                    "pid {}{} waits for {}, held by pid {}{}",
                    pid_text(l.waiter_pid),
                    lane_text(l.waiter_lane.as_deref()),
                    name(&l.session),
                    pid_text(l.holder_pid),
                    lane_text(l.holder_lane.as_deref()),
                )
            })
            .collect();
        let end = match self.ends {
            Some(t) => {
                let by = self.links.iter().find_map(|l| {
                    if l.waiter_deadline == Some(t) {
                        Some(format!(
                            "when pid {} gives up waiting for {}",
                            pid_text(l.waiter_pid),
                            name(&l.session)
                        ))
                    } else if l.lease_end == Some(t) {
                        Some(format!(
                            "when the lease of pid {} on {} ends",
                            pid_text(l.holder_pid),
                            name(&l.session)
                        ))
                    } else {
                        None
                    }
                });
                format!(
                    "it cannot resolve before {} ({})",
                    format_time(t),
                    by.unwrap_or_default()
                )
            }
            None => "no lease end or deadline in it is known".to_owned(),
        };
        format!(
            "wait-for cycle: {}; {end}: end one of these acquisitions (or kill its process) to \
             break it sooner",
            links.join("; ")
        )
    }
}

/// The wait-for cycles among the holders and waiters of `locks` (every
/// session of a directory, or of a server). Holders that are gone are left
/// out (their locks are reclaimed, which breaks the chain).
pub fn cycles<K, V>(locks: &[&LockStatus<K, V>]) -> Vec<Cycle> {
    // waiter → [(holder, link)]
    let mut edges: BTreeMap<Node, Vec<(Node, Link)>> = BTreeMap::new();
    for st in locks {
        let h = &st.holder;
        if !st.liveness.presumed_alive() {
            continue;
        }
        let Some(to) = node(h.hostname.as_deref(), h.pid) else {
            continue;
        };
        for w in &st.contention.queue {
            let Some(from) = node(w.hostname.as_deref(), w.pid) else {
                continue;
            };
            if from == to {
                continue;
            }
            let link = Link {
                waiter_pid: w.pid,
                waiter_host: w.hostname.clone(),
                waiter_lane: w.lane.clone(),
                waiter_deadline: w.deadline,
                session: st.session.clone(),
                holder_pid: h.pid,
                holder_host: h.hostname.clone(),
                holder_lane: h.lane.clone(),
                lease_end: st.lease_end,
            };
            edges.entry(from).or_default().push((to.clone(), link));
        }
    }
    let mut found = Vec::new();
    let mut steps = 0usize;
    // Each cycle once: from its least process, through greater ones only.
    for start in edges.keys() {
        let mut path: Vec<(Node, usize)> = vec![(start.clone(), 0)];
        let mut links: Vec<Link> = Vec::new();
        while let Some((at, next)) = path.last().cloned() {
            steps += 1;
            if steps > MAX_STEPS || found.len() >= MAX_CYCLES {
                return found;
            }
            let out = edges.get(&at).map_or(&[][..], Vec::as_slice);
            let Some((to, link)) = out.get(next) else {
                path.pop();
                links.pop();
                continue;
            };
            if let Some(last) = path.last_mut() {
                last.1 += 1;
            }
            if to == start {
                let mut cycle = links.clone();
                cycle.push(link.clone());
                let ends = cycle
                    .iter()
                    .flat_map(|l| [l.lease_end, l.waiter_deadline])
                    .flatten()
                    .min();
                found.push(Cycle { links: cycle, ends });
            } else if to > start && !path.iter().any(|(n, _)| n == to) {
                path.push((to.clone(), 0));
                links.push(link.clone());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::status::{Contention, Waiter};
    use crate::error::Holder;
    use crate::identity::Liveness;
    use std::time::Duration;

    fn held(
        session: &str,
        pid: u32,
        lane: &str,
        end: SystemTime,
        waiters: &[(u32, &str)],
    ) -> LockStatus<(), ()> {
        let mut holder = Holder::unknown(PathBuf::from(format!("{session}.lock")));
        holder.pid = Some(pid);
        holder.hostname = Some("h".into());
        holder.lane = Some(lane.into());
        let c = Contention {
            queue: waiters
                .iter()
                .map(|&(p, l)| {
                    let mut w = Waiter::new(Some(p));
                    w.hostname = Some("h".into());
                    w.lane = Some(l.into());
                    w
                })
                .collect(),
            ..Contention::default()
        };
        LockStatus::for_tests(PathBuf::from(session), holder, Liveness::Alive, end, c)
    }

    #[test]
    fn a_two_process_cycle_is_found_once_and_ends_with_the_first_lease() {
        let t = SystemTime::now();
        let a = held(
            "s1.jsonl",
            10,
            "x",
            t + Duration::from_secs(60),
            &[(11, "y")],
        );
        let b = held(
            "s2.jsonl",
            11,
            "y",
            t + Duration::from_secs(30),
            &[(10, "x"), (12, "z")],
        );
        // 12 waits for 11 but nobody waits for 12: no cycle through it.
        let found = cycles(&[&a, &b]);
        assert_eq!(found.len(), 1, "{found:#?}");
        let c = &found[0];
        assert_eq!(c.links.len(), 2);
        assert_eq!(c.links[0].waiter_pid, Some(10));
        assert_eq!(c.links[0].session, PathBuf::from("s2.jsonl"));
        assert_eq!(c.links[1].waiter_pid, Some(11));
        assert_eq!(c.ends, Some(t + Duration::from_secs(30)));
        let text = c.describe();
        assert!(
            text.contains("pid 10 (lane x) waits for s2.jsonl, held by pid 11 (lane y)"),
            "{text}"
        );
        assert!(
            text.contains("when the lease of pid 11 on s2.jsonl ends"),
            "{text}"
        );
        // A chain that ends somewhere is no cycle.
        let c = held("s3.jsonl", 12, "z", t, &[]);
        let d = held("s4.jsonl", 13, "w", t, &[(12, "z")]);
        assert!(cycles(&[&c, &d]).is_empty());
    }
}
