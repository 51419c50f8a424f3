//! `halo upgrade`: the running daemon hands everything over to a new process started from the
//! binary now on disk, without a failover and without cutting a connection.
//!
//! The trigger is SIGUSR2 (`halo upgrade` sends it after checking the file with the new binary;
//! `systemctl reload` stays a configuration reload). The running daemon starts
//! `halo run --upgrade-handover` with one end of a `SOCK_SEQPACKET` socket pair as its standard
//! input, and the two speak [`message`]s:
//!
//! 1. **offer** (running → new): its pid and version, its listening sockets and the status
//!    endpoint's (attached: SCM_RIGHTS), what its checks know of every server, and where each
//!    VRRP instance runs. The new process has already loaded and validated its configuration
//!    (a failure is sent back as **failed**, with the errors). It builds everything: the balancer
//!    on the sockets handed over (not accepting yet) with the servers' health, trackers, its own
//!    guard, and opens the sockets of every instance it can adopt (same name, interface, VRID,
//!    version, interval, family, unicast peers and password; never a virtual-MAC one).
//! 2. **ready** (new → running), naming those instances. The running daemon hands each over: a
//!    master sends one last advert and stops without priority 0, its VIPs stay on the interface
//!    and in its guard.
//! 3. **frozen** (running → new): each instance's state and timers. The new process adopts them:
//!    a master advertises at once with its own priority (never 0) and refreshes its VIPs, and
//!    its guard is told, held back (should this process die now, its guard must not remove
//!    the VIPs the old one resumes with, nor send priority 0); then it accepts on the sockets,
//!    serves the status endpoint, and says
//! 4. **committed** (new → running). The commit point: until it, any failure (the new process
//!    refuses its configuration, crashes, says failed, or is not heard of within the time
//!    allowed) makes the running daemon restart the instances it handed over from their frozen
//!    state (a master stays master) and go on as if nothing happened; it says why on its status
//!    endpoint (`last_upgrade`, which `halo upgrade` reports) and in its log, with the new
//!    process's exit status.
//! 5. After it, the running daemon tells its guard to forget everything (only now: the new
//!    process holds the VIPs), stops the instances not adopted as a clean stop would, hands its
//!    BGP announcements over without withdrawing, and says **released**; it still accepts. The
//!    new process engages its guard (told what was held back: no moment has both guards holding
//!    a VIP), starts the instances it did not adopt and its announcements, and says
//! 6. **serving** (new → running), then writes the pid file (only now: a failed upgrade never
//!    leaves it naming the new process, nor `halo upgrade` taking it for the daemon) and shows
//!    the old one as `previous` in its status until the socket closes. The old one stops
//!    accepting, tells systemd `MAINPID=` of the new process, and sends its established
//!    connections (**connections**, [`connections`]): each paused where halo holds none of its
//!    bytes, both sockets attached; the new process relays on. It drains what could not pause up
//!    to `drain_timeout` and exits 0. Should the new process end (or fall silent for
//!    [`SERVING_WITHIN`]: it is killed) between the commit and `serving`, the old one resumes
//!    instead of exiting: it never stopped accepting, it starts every instance afresh (what it
//!    handed over may be stale: a peer may hold the VIP, or the new process's guard may have
//!    removed it), takes its announcements back without withdrawing them, writes the pid file
//!    again and says so in `last_upgrade` (which `halo upgrade` reports). A `failed` in answer to the commit (it came
//!    after the running daemon stopped waiting) makes the new process give up as before.
//!
//! What remains: a new process that dies after `serving` is an ordinary crash of the service
//! (systemd restarts it); the old one has begun to drain by then.

pub mod adoption;
mod connection_json;
mod connections;
mod hand_over;
pub mod message;
mod take_over;

pub(crate) use hand_over::{HandedOver, Outcome, Released, hand_over, release};
pub(crate) use take_over::take_over;

/// How long the running daemon waits for the new process to be ready: it loads its
/// configuration, binds what is new and opens the VRRP sockets.
pub const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a new process that gives up waits for the running daemon to read why.
pub const FAREWELL_LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// How long the running daemon, having let go, waits for the new process to say it serves.
pub const SERVING_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);
/// How long each side waits for the other's next step once both are ready.
pub const STEP_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);
