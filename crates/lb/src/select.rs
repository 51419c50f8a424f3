//! Server selection, pure: a [`Schedule`] built from the servers' states when one of them
//! changes (rare), then read by every connection without a lock — a round-robin turn taken
//! from one atomic counter indexes it. Round robin is smooth and weighted, least connections
//! takes turns among the least loaded, first takes the first. Only usable servers (healthy,
//! enabled, taking new connections, with an address) are chosen; backups only while no primary
//! is usable.

use halo_config::Balance;

/// What selection knows of one server when a schedule is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Relative share (at least 1).
    pub weight: u32,
    /// Used only when no primary is usable.
    pub backup: bool,
    /// Healthy, enabled, taking new connections, with an address.
    pub usable: bool,
}

impl Candidate {
    /// A server as it stands.
    pub fn new(weight: u32, backup: bool, usable: bool) -> Self {
        Self { weight: weight.max(1), backup, usable }
    }
}

thread_local! {
    /// Least connections' reading of the loads, kept per thread: no allocation per choice.
    static LOADS: std::cell::RefCell<Vec<(usize, u64)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Longest smooth round-robin sequence kept per tier; weights are reduced by their greatest
/// common divisor first, so only unusual weight mixes over many servers come near it. Beyond
/// it, weights are scaled down (each server keeps at least one turn).
const MAX_SEQUENCE: u64 = 1 << 16;

/// One tier of servers (primaries or backups): its usable members in configuration order, and
/// the smooth weighted round-robin sequence over them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Tier {
    members: Vec<usize>,
    weights: Vec<u32>,
    sequence: Vec<u32>,
}

/// The choices of one backend's servers in one state: immutable, replaced as a whole when a
/// server's state changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Schedule {
    primary: Tier,
    backup: Tier,
}

impl Schedule {
    /// The schedule of `candidates` (indexed as the backend's servers).
    pub fn build(candidates: &[Candidate]) -> Self {
        let tier = |backup: bool| {
            let members: Vec<usize> = (0..candidates.len()).filter(|&i| candidates[i].usable && candidates[i].backup == backup).collect();
            let weights: Vec<u32> = members.iter().map(|&i| candidates[i].weight).collect();
            let sequence = smooth_sequence(&reduced(&weights));
            Tier { members, weights, sequence }
        };
        Self { primary: tier(false), backup: tier(true) }
    }

    /// Whether no server can be chosen.
    pub fn is_empty(&self) -> bool {
        self.primary.members.is_empty() && self.backup.members.is_empty()
    }

    /// The server for the connection of round-robin `turn`, skipping `exclude` (servers already
    /// tried for this client); `active(i)` is server i's connections in progress (least
    /// connections only). `None` when no server can take the connection.
    pub fn pick(&self, balance: Balance, turn: usize, active: impl Fn(usize) -> u32, exclude: &[usize]) -> Option<usize> {
        let open = |tier: &Tier| tier.members.iter().any(|i| !exclude.contains(i));
        let tier = if open(&self.primary) { &self.primary } else { &self.backup };
        match balance {
            Balance::First => tier.members.iter().copied().find(|i| !exclude.contains(i)),
            Balance::RoundRobin => {
                let len = tier.sequence.len();
                (0..len).map(|step| tier.members[tier.sequence[turn.wrapping_add(step) % len] as usize]).find(|i| !exclude.contains(i))
            }
            Balance::LeastConn => {
                // active / weight, compared without division; servers as loaded as each other
                // take turns (haproxy's leastconn does too), so idle servers share one-at-a-time
                // clients instead of the first taking them all. Each count is read once: other
                // threads change them meanwhile, and the choice must rest on one reading.
                LOADS.with_borrow_mut(|loads| {
                    loads.clear();
                    for (at, &member) in tier.members.iter().enumerate() {
                        if !exclude.contains(&member) {
                            loads.push((member, u64::from(active(member)) * 1_000_000 / u64::from(tier.weights[at])));
                        }
                    }
                    let least = loads.iter().map(|&(_, load)| load).min()?;
                    let ties = loads.iter().filter(|&&(_, load)| load == least).count();
                    loads.iter().filter(|&&(_, load)| load == least).nth(turn % ties.max(1)).map(|&(member, _)| member)
                })
            }
        }
    }
}

/// Weights divided by their greatest common divisor, then scaled down if their sum would make
/// a sequence longer than [`MAX_SEQUENCE`].
fn reduced(weights: &[u32]) -> Vec<u32> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let mut reduced: Vec<u32> = weights.iter().map(|w| w / divisor).collect();
    let total: u64 = reduced.iter().map(|&w| u64::from(w)).sum();
    if total > MAX_SEQUENCE {
        reduced = reduced.iter().map(|&w| ((u64::from(w) * MAX_SEQUENCE / total) as u32).max(1)).collect();
    }
    reduced
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Smooth weighted round robin written out for one full cycle (the sum of the weights): each
/// member gains its weight, the richest takes the turn and pays the total. Spreads a 5:1:1 split
/// as a,a,b,a,c,a,a rather than in runs.
fn smooth_sequence(weights: &[u32]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut sequence = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (at, weight) in weights.iter().enumerate() {
            current[at] += i64::from(*weight);
            if current[at] > current[best] {
                best = at;
            }
        }
        current[best] -= total;
        sequence.push(best as u32);
    }
    sequence
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(weights: &[u32]) -> Vec<Candidate> {
        weights.iter().map(|w| Candidate::new(*w, false, true)).collect()
    }

    fn sequence(balance: Balance, candidates: &[Candidate], n: usize) -> Vec<usize> {
        let schedule = Schedule::build(candidates);
        (0..n).map(|turn| schedule.pick(balance, turn, |_| 0, &[]).expect("a server")).collect()
    }

    #[test]
    fn round_robin_is_smooth_and_weighted() {
        assert_eq!(sequence(Balance::RoundRobin, &servers(&[1, 1, 1]), 6), [0, 1, 2, 0, 1, 2]);
        assert_eq!(sequence(Balance::RoundRobin, &servers(&[5, 1, 1]), 7), [0, 0, 1, 0, 2, 0, 0]);
        let picks = sequence(Balance::RoundRobin, &servers(&[3, 1]), 400);
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 300);
        // Equal weights of any size are one turn each.
        assert_eq!(Schedule::build(&servers(&[256, 256])).primary.sequence.len(), 2);
    }

    #[test]
    fn a_long_sequence_is_scaled_down_and_keeps_every_server() {
        let mut weights = vec![256; 300];
        weights.push(1);
        weights.push(255);
        let schedule = Schedule::build(&servers(&weights));
        assert!(schedule.primary.sequence.len() as u64 <= MAX_SEQUENCE + weights.len() as u64);
        for server in 0..weights.len() {
            assert!(schedule.primary.sequence.iter().any(|&s| s as usize == server), "server {server} has no turn");
        }
    }

    #[test]
    fn only_usable_servers_and_backups_last() {
        let mut c = servers(&[1, 1, 1]);
        c[1].usable = false;
        c[2].usable = false;
        assert_eq!(sequence(Balance::RoundRobin, &c, 3), [0, 0, 0]);
        let c = vec![Candidate::new(1, false, false), Candidate::new(1, true, true)];
        assert_eq!(Schedule::build(&c).pick(Balance::RoundRobin, 0, |_| 0, &[]), Some(1), "the backup serves while no primary is up");
        let c = vec![Candidate::new(1, false, true), Candidate::new(1, true, true)];
        assert_eq!(sequence(Balance::RoundRobin, &c, 3), [0, 0, 0], "and stops when one is back");
        let c = vec![Candidate::new(1, false, false), Candidate::new(1, true, false)];
        assert!(Schedule::build(&c).is_empty());
        assert_eq!(Schedule::build(&c).pick(Balance::RoundRobin, 0, |_| 0, &[]), None);
    }

    #[test]
    fn exclusion_redispatches_and_reaches_backups() {
        let c = vec![Candidate::new(1, false, true), Candidate::new(1, false, true), Candidate::new(1, true, true)];
        let schedule = Schedule::build(&c);
        for balance in [Balance::First, Balance::RoundRobin, Balance::LeastConn] {
            assert_eq!(schedule.pick(balance, 0, |_| 0, &[0]), Some(1), "{balance:?}");
            assert_eq!(schedule.pick(balance, 7, |_| 0, &[0, 1]), Some(2), "{balance:?}: primaries all tried: the backup");
            assert_eq!(schedule.pick(balance, 3, |_| 0, &[0, 1, 2]), None, "{balance:?}");
        }
    }

    #[test]
    fn least_connections_takes_turns_among_equally_loaded_servers() {
        assert_eq!(sequence(Balance::LeastConn, &servers(&[1, 1]), 4), [0, 1, 0, 1]);
        assert_eq!(sequence(Balance::LeastConn, &servers(&[1, 1, 1]), 6), [0, 1, 2, 0, 1, 2]);
        let schedule = Schedule::build(&servers(&[1, 1, 1]));
        let busy_first = |i: usize| u32::from(i == 0);
        let picks: Vec<_> = (0..4).map(|turn| schedule.pick(Balance::LeastConn, turn, busy_first, &[]).expect("a server")).collect();
        assert_eq!(picks, [1, 2, 1, 2], "the busy server is left out of the turns");
    }

    /// Other threads change the counts while a choice is made: each is read once, so that
    /// the least loaded server and its turn come from one reading (reading them again gave no
    /// tie at all once, and a division by zero).
    #[test]
    fn least_connections_reads_each_count_once() {
        let schedule = Schedule::build(&servers(&[1, 1, 1]));
        let reads = std::cell::Cell::new(0u32);
        // Every read finds a different count, as under load.
        let changing = |_: usize| {
            reads.set(reads.get() + 1);
            3 - reads.get() % 3
        };
        assert!(schedule.pick(Balance::LeastConn, 5, changing, &[]).is_some());
        assert_eq!(reads.get(), 3, "one read per server");
    }

    #[test]
    fn least_connections_weighted() {
        let schedule = Schedule::build(&servers(&[1, 2]));
        let active = |loads: [u32; 2]| move |i: usize| loads[i];
        assert_eq!(schedule.pick(Balance::LeastConn, 0, active([2, 3]), &[]), Some(1), "3/2 < 2/1");
        assert_eq!(schedule.pick(Balance::LeastConn, 0, active([2, 5]), &[]), Some(0));
    }

    #[test]
    fn first_takes_the_first_usable_server() {
        let mut c = servers(&[1, 1, 1]);
        assert_eq!(sequence(Balance::First, &c, 3), [0, 0, 0]);
        c[0].usable = false;
        assert_eq!(sequence(Balance::First, &c, 2), [1, 1]);
    }
}
