//! `halo host check` of the frontends' addresses: each free to bind, or who holds it.

use std::net::SocketAddr;

use halo_config::Config;

use super::report::Report;
use crate::host::verdict::Verdict;

/// The check of every frontend address of `config`; `others` are the balancers running here.
pub(super) fn port_checks(report: &mut Report, config: &Config, others: &[(String, u32)]) {
    for frontend in &config.frontends {
        for bind in &frontend.binds {
            port_check(report, *bind, &frontend.name, try_bind(*bind), others);
        }
    }
}

/// A frontend address must be free, from the outcome of binding it; when it is taken, the
/// balancers running here are named.
fn port_check(report: &mut Report, bind: SocketAddr, frontend: &str, bound: std::io::Result<()>, others: &[(String, u32)]) {
    let check = format!("port {bind}");
    match bound {
        Ok(()) => report.ok(check, format!("free (frontend {frontend})")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && others.iter().any(|(n, _)| n == "halo") => {
            report.add(check, Verdict::Warn, "in use, and halo runs here: probably this configuration's daemon", "")
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let who = others.iter().map(|(name, pid)| format!("{name} (pid {pid})")).collect::<Vec<_>>().join(", ");
            let found = if who.is_empty() { "in use".to_string() } else { format!("in use; running here: {who}") };
            report.add(check, Verdict::Fail, found, "stop whatever listens there (haproxy of the classic stack?) before halo run");
        }
        Err(e) => report.add(check, Verdict::Fail, format!("cannot bind: {e}"), ""),
    }
}

/// Whether a frontend address could be bound now (with IP_FREEBIND, as the balancer does).
fn try_bind(address: SocketAddr) -> std::io::Result<()> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if address.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    }
    socket.bind(&address.into())?;
    socket.listen(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{Error, ErrorKind};

    use super::*;
    use crate::host::check::report::only;

    fn port(bound: std::io::Result<()>, others: &[(String, u32)]) -> (String, Verdict, String, String) {
        let mut report = Report::default();
        port_check(&mut report, "10.9.0.100:8443".parse().unwrap(), "apiserver", bound, others);
        only(report)
    }

    fn in_use() -> std::io::Result<()> {
        Err(Error::from(ErrorKind::AddrInUse))
    }

    #[test]
    fn a_free_port_is_ok_and_names_its_frontend() {
        assert_eq!(port(Ok(()), &[]), ("port 10.9.0.100:8443".into(), Verdict::Ok, "free (frontend apiserver)".into(), String::new()));
    }

    #[test]
    fn a_port_in_use_while_halo_runs_here_is_only_a_warning() {
        let others = [("haproxy".to_string(), 7), ("halo".to_string(), 8)];
        let (_, status, found, _) = port(in_use(), &others);
        assert_eq!((status, found.as_str()), (Verdict::Warn, "in use, and halo runs here: probably this configuration's daemon"));
    }

    #[test]
    fn a_port_in_use_fails_and_names_the_balancers_running_here() {
        let others = [("haproxy".to_string(), 7), ("keepalived".to_string(), 9)];
        let (_, status, found, fix) = port(in_use(), &others);
        assert_eq!((status, found.as_str()), (Verdict::Fail, "in use; running here: haproxy (pid 7), keepalived (pid 9)"));
        assert_eq!(fix, "stop whatever listens there (haproxy of the classic stack?) before halo run");
    }

    #[test]
    fn a_port_in_use_by_an_unknown_process_fails() {
        let (_, status, found, _) = port(in_use(), &[]);
        assert_eq!((status, found.as_str()), (Verdict::Fail, "in use"));
    }

    #[test]
    fn a_port_that_cannot_be_bound_fails_with_the_reason() {
        let (_, status, found, _) = port(Err(Error::new(ErrorKind::PermissionDenied, "denied")), &[]);
        assert_eq!((status, found.as_str()), (Verdict::Fail, "cannot bind: denied"));
    }
}
