//! Server names to addresses through the system resolver (getaddrinfo: `/etc/hosts`,
//! nsswitch, DNS), and the choice among several records.

use std::net::SocketAddr;
use std::time::Duration;

use halo_config::AddressFamily;
use tokio::sync::Semaphore;

/// A lookup still running after this counts as failed (getaddrinfo itself may take far longer
/// when a nameserver does not answer; the lookup is abandoned, not cancelled).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many lookups run at once, abandoned ones included: each holds a thread until
/// getaddrinfo returns (30 s and more a query when a nameserver is silent), and every server
/// asks again each `resolve_interval`. A lookup waits for a place within its timeout.
pub const MAX_LOOKUPS: usize = 8;

static LOOKUPS: Semaphore = Semaphore::const_new(MAX_LOOKUPS);

/// The address `host:port` resolves to now: the first record of `prefer`, else the first of
/// the other family. The error is the reason a human reads ("DNS: ...").
pub async fn resolve(host: &str, port: u16, prefer: AddressFamily) -> Result<SocketAddr, String> {
    let name = host.to_string();
    let lookup = async move {
        let place = LOOKUPS.acquire().await.map_err(|e| e.to_string())?;
        // The place goes with the thread: it is free again only when getaddrinfo has returned.
        tokio::task::spawn_blocking(move || {
            let _place = place;
            std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), port))
                .map(Iterator::collect::<Vec<SocketAddr>>)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("the lookup failed: {e}"))?
    };
    let records = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(records)) => records,
        Ok(Err(e)) => return Err(format!("DNS: {host}: {e}")),
        Err(_) => return Err(format!("DNS: {host}: no answer within {}s", RESOLVE_TIMEOUT.as_secs())),
    };
    choose(&records, prefer).ok_or_else(|| format!("DNS: {host}: no address"))
}

/// The first record of the preferred family, else the first record.
pub fn choose(records: &[SocketAddr], prefer: AddressFamily) -> Option<SocketAddr> {
    let preferred = |a: &&SocketAddr| match prefer {
        AddressFamily::Ipv4 => a.is_ipv4(),
        AddressFamily::Ipv6 => a.is_ipv6(),
    };
    records.iter().find(preferred).or_else(|| records.first()).copied()
}

// Lookups themselves are tested in network namespaces with their own /etc/hosts
// (crates/halo/tests/names.rs): a test here would ask the host's nameservers.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preferred_family_wins_and_the_other_is_the_fallback() {
        let v4: SocketAddr = "10.0.0.1:6443".parse().expect("address");
        let v6: SocketAddr = "[fd00::1]:6443".parse().expect("address");
        assert_eq!(choose(&[v6, v4], AddressFamily::Ipv4), Some(v4));
        assert_eq!(choose(&[v4, v6], AddressFamily::Ipv6), Some(v6));
        assert_eq!(choose(&[v6], AddressFamily::Ipv4), Some(v6));
        assert_eq!(choose(&[], AddressFamily::Ipv4), None);
    }
}
