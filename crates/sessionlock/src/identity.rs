//! Holder identity and liveness
//! ([design §4](crate::design#4-stale-classification), its liveness table).
//!
//! A holder is identified by pid, process start time, boot id and host name.
//! It is alive when `kill(pid, 0)` succeeds or fails with `EPERM`, it is not a
//! zombie, its start time matches the payload where both are known, and its
//! boot id (where recorded) is this machine's.

use crate::payload::Payload;
use crate::sys;

/// What this process writes into its payloads to identify itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfIdentity {
    /// Our pid.
    pub pid: u32,
    /// Our start time in clock ticks since boot, when readable.
    pub starttime: Option<u64>,
    /// This machine's boot id, when readable.
    pub boot_id: Option<String>,
    /// This machine's host name.
    pub hostname: String,
}

impl SelfIdentity {
    /// The identity of the calling process.
    pub fn current() -> SelfIdentity {
        SelfIdentity {
            pid: sys::pid(),
            starttime: sys::self_starttime(),
            boot_id: sys::boot_id().map(str::to_owned),
            hostname: sys::hostname().to_owned(),
        }
    }
}

/// What a liveness check concluded about a payload's holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The holder process runs on this machine.
    Alive,
    /// The holder runs on another host: it cannot be checked and counts as
    /// alive until its lease ends.
    Remote,
    /// No such process, a zombie, or a holder from an earlier boot.
    Dead,
    /// The pid is alive but belongs to another process (start time differs).
    Recycled,
    /// The payload has no usable pid.
    Unknown,
}

impl Liveness {
    /// Whether the holder must be presumed alive.
    pub fn presumed_alive(self) -> bool {
        matches!(self, Liveness::Alive | Liveness::Remote)
    }
}

/// Checks whether the holder a payload names is alive, from this machine.
pub fn check(payload: &Payload, me: &SelfIdentity) -> Liveness {
    check_inner(payload, me)
}

/// This process, as its locks name it (read once).
pub(crate) fn me() -> &'static SelfIdentity {
    static ME: std::sync::OnceLock<SelfIdentity> = std::sync::OnceLock::new();
    ME.get_or_init(SelfIdentity::current)
}

/// The local evidence about a payload's holder (the file backend's): its
/// liveness by pid, start time and boot id, and whether it is this process
/// (alive, same pid and host).
pub fn judge(payload: &Payload, me: &SelfIdentity) -> (Liveness, bool) {
    let liveness = check(payload, me);
    let ours = payload.pid == Some(me.pid)
        && liveness == Liveness::Alive
        && payload.hostname.as_ref().is_none_or(|h| *h == me.hostname);
    (liveness, ours)
}

fn check_inner(payload: &Payload, me: &SelfIdentity) -> Liveness {
    if let Some(host) = &payload.hostname {
        if *host != me.hostname {
            return Liveness::Remote;
        }
    }
    let Some(pid) = payload.pid else {
        return Liveness::Unknown;
    };
    if let (Some(theirs), Some(ours)) = (&payload.boot_id, &me.boot_id) {
        if theirs != ours {
            return Liveness::Dead;
        }
    }
    if !sys::process_exists(pid) {
        return Liveness::Dead;
    }
    match sys::proc_stat(pid) {
        // Zombie or dead: the process has exited, only its entry remains.
        Some(st) if st.state == b'Z' || st.state == b'X' => Liveness::Dead,
        Some(st) if payload.starttime.is_some_and(|s| s != st.starttime) => Liveness::Recycled,
        // Exists; start time matches, was not recorded, or /proc is hidden.
        _ => Liveness::Alive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(pid: u32) -> Payload {
        Payload {
            pid: Some(pid),
            ..Payload::default()
        }
    }

    #[test]
    fn self_is_alive_and_wrong_starttime_is_recycled() {
        let me = SelfIdentity::current();
        let mut p = payload(me.pid);
        p.starttime = me.starttime;
        assert_eq!(check(&p, &me), Liveness::Alive);
        p.starttime = me.starttime.map(|s| s + 1);
        assert_eq!(check(&p, &me), Liveness::Recycled);
    }

    #[test]
    fn other_boot_is_dead_other_host_is_remote() {
        let me = SelfIdentity::current();
        let mut p = payload(me.pid);
        p.boot_id = Some("not-this-boot".into());
        if me.boot_id.is_some() {
            assert_eq!(check(&p, &me), Liveness::Dead);
        }
        p.hostname = Some(format!("{}-elsewhere", me.hostname));
        assert_eq!(check(&p, &me), Liveness::Remote);
    }

    #[test]
    fn missing_pid_is_unknown() {
        assert_eq!(
            check(&Payload::default(), &SelfIdentity::current()),
            Liveness::Unknown
        );
    }

    #[test]
    fn zombie_is_dead() {
        // A child that exits and is not reaped stays a zombie until we wait.
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while sys::proc_stat(pid).map(|s| s.state) != Some(b'Z') {
            assert!(
                std::time::Instant::now() < deadline,
                "child never became a zombie"
            );
            std::thread::yield_now();
        }
        assert!(sys::process_exists(pid), "a zombie still answers kill(0)");
        assert_eq!(
            check(&payload(pid), &SelfIdentity::current()),
            Liveness::Dead
        );
        child.wait().expect("reap");
    }
}
