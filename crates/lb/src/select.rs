//! Server selection, pure: smooth weighted round robin, least connections, first. Only healthy,
//! enabled servers are chosen; backups only while no primary is healthy.

use halo_config::Balance;

/// What selection knows of one server.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Relative share.
    pub weight: u32,
    /// Used only when no primary is healthy.
    pub backup: bool,
    /// Never chosen.
    pub disabled: bool,
    /// Passes its health check.
    pub healthy: bool,
    /// Connections in progress.
    pub active: u32,
    /// Smooth weighted round robin state.
    current: i64,
}

impl Candidate {
    /// A server as configured, healthy or not.
    pub fn new(weight: u32, backup: bool, disabled: bool, healthy: bool) -> Self {
        Self { weight: weight.max(1), backup, disabled, healthy, active: 0, current: 0 }
    }

    fn eligible(&self, backup: bool) -> bool {
        self.healthy && !self.disabled && self.backup == backup
    }
}

/// Picks a server index among `candidates`, skipping `exclude` (servers already tried for this
/// client). `None` when no server can take the connection.
pub fn pick(balance: Balance, candidates: &mut [Candidate], exclude: &[usize]) -> Option<usize> {
    let has_primary = candidates.iter().enumerate().any(|(i, c)| c.eligible(false) && !exclude.contains(&i));
    let tier = !has_primary;
    // No allocation: this runs for every connection.
    let is_eligible = |candidates: &[Candidate], i: usize| candidates[i].eligible(tier) && !exclude.contains(&i);
    let first = (0..candidates.len()).find(|&i| is_eligible(candidates, i))?;
    let chosen = match balance {
        Balance::First => first,
        Balance::LeastConn => {
            // active / weight, compared without division.
            let load = |c: &Candidate| u64::from(c.active) * 1_000_000 / u64::from(c.weight);
            let least = (first..candidates.len()).filter(|&i| is_eligible(candidates, i)).map(|i| load(&candidates[i])).min()?;
            // Servers as loaded as each other take turns (haproxy's leastconn does too): idle
            // servers share one-at-a-time clients instead of the first taking them all.
            smooth_round_robin(candidates, |c, i| is_eligible(c, i) && load(&c[i]) == least)?
        }
        Balance::RoundRobin => smooth_round_robin(candidates, is_eligible)?,
    };
    Some(chosen)
}

/// Smooth weighted round robin among the candidates `eligible` takes: each gains its weight,
/// the richest wins and pays the total. Spreads a 5:1:1 split as a,a,b,a,c,a,a rather than in
/// runs.
fn smooth_round_robin(candidates: &mut [Candidate], eligible: impl Fn(&[Candidate], usize) -> bool) -> Option<usize> {
    let mut total: i64 = 0;
    let mut best: Option<usize> = None;
    for i in 0..candidates.len() {
        if !eligible(candidates, i) {
            continue;
        }
        total += i64::from(candidates[i].weight);
        candidates[i].current += i64::from(candidates[i].weight);
        if best.is_none_or(|b| candidates[i].current > candidates[b].current) {
            best = Some(i);
        }
    }
    let best = best?;
    candidates[best].current -= total;
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(weights: &[u32]) -> Vec<Candidate> {
        weights.iter().map(|w| Candidate::new(*w, false, false, true)).collect()
    }

    fn sequence(balance: Balance, candidates: &mut [Candidate], n: usize) -> Vec<usize> {
        (0..n).map(|_| pick(balance, candidates, &[]).expect("a server")).collect()
    }

    #[test]
    fn round_robin_is_smooth_and_weighted() {
        assert_eq!(sequence(Balance::RoundRobin, &mut servers(&[1, 1, 1]), 6), [0, 1, 2, 0, 1, 2]);
        assert_eq!(sequence(Balance::RoundRobin, &mut servers(&[5, 1, 1]), 7), [0, 0, 1, 0, 2, 0, 0]);
        let picks = sequence(Balance::RoundRobin, &mut servers(&[3, 1]), 400);
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 300);
    }

    #[test]
    fn only_healthy_enabled_servers_and_backups_last() {
        let mut c = servers(&[1, 1, 1]);
        c[1].healthy = false;
        c[2].disabled = true;
        assert_eq!(sequence(Balance::RoundRobin, &mut c, 3), [0, 0, 0]);
        let mut c = vec![Candidate::new(1, false, false, false), Candidate::new(1, true, false, true)];
        assert_eq!(pick(Balance::RoundRobin, &mut c, &[]), Some(1), "the backup serves while no primary is up");
        c[0].healthy = true;
        assert_eq!(pick(Balance::RoundRobin, &mut c, &[]), Some(0), "and stops when one is back");
        c[0].healthy = false;
        c[1].healthy = false;
        assert_eq!(pick(Balance::RoundRobin, &mut c, &[]), None);
    }

    #[test]
    fn exclusion_redispatches_and_reaches_backups() {
        let mut c =
            vec![Candidate::new(1, false, false, true), Candidate::new(1, false, false, true), Candidate::new(1, true, false, true)];
        assert_eq!(pick(Balance::First, &mut c, &[0]), Some(1));
        assert_eq!(pick(Balance::First, &mut c, &[0, 1]), Some(2), "primaries all tried: the backup");
        assert_eq!(pick(Balance::First, &mut c, &[0, 1, 2]), None);
    }

    #[test]
    fn least_connections_takes_turns_among_equally_loaded_servers() {
        assert_eq!(sequence(Balance::LeastConn, &mut servers(&[1, 1]), 4), [0, 1, 0, 1]);
        assert_eq!(sequence(Balance::LeastConn, &mut servers(&[1, 1, 1]), 6), [0, 1, 2, 0, 1, 2]);
        let mut c = servers(&[1, 1, 1]);
        c[0].active = 1;
        assert_eq!(sequence(Balance::LeastConn, &mut c, 4), [1, 2, 1, 2], "the busy server is left out of the turns");
    }

    #[test]
    fn least_connections_weighted() {
        let mut c = servers(&[1, 2]);
        c[0].active = 2;
        c[1].active = 3;
        assert_eq!(pick(Balance::LeastConn, &mut c, &[]), Some(1), "3/2 < 2/1");
        c[1].active = 5;
        assert_eq!(pick(Balance::LeastConn, &mut c, &[]), Some(0));
    }
}
