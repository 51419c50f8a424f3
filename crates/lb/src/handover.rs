//! What the balancer hands to the process that replaces it (`halo upgrade`): its listening
//! sockets, and what its health checks know of each server, so that the new process serves from
//! its first connection with the same servers up (its own checks go on from there, as after a
//! reload) instead of starting every server DOWN until its first check.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

use crate::Balancer;

/// What is known of one server, by backend and server name and configured address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHealth {
    /// Its backend.
    pub backend: String,
    /// Its name.
    pub server: String,
    /// Its configured address (`ip:port` or `name:port`): a server that changed it is new.
    pub configured: String,
    /// The address its name resolved to (the configured one for an address).
    pub resolved: Option<SocketAddr>,
    /// Whether its checks have decided (UP, or DOWN after `fall` failures).
    pub decided: bool,
    /// Whether it takes traffic.
    pub up: bool,
    /// What an operator set at run time.
    pub admin: crate::Admin,
    /// The run-time weight an operator set, if any.
    pub weight: Option<u32>,
}

impl Balancer {
    /// The listening sockets, by address.
    pub fn listening_sockets(&self) -> Vec<(SocketAddr, BorrowedFd<'_>)> {
        self.listeners.iter().flat_map(|l| l.sockets.iter().map(|socket| (l.address, socket.as_fd()))).collect()
    }

    /// What the checks know of every server.
    pub fn server_health(&self) -> Vec<ServerHealth> {
        self.backends
            .iter()
            .flat_map(|b| {
                b.servers.iter().map(|s| ServerHealth {
                    backend: b.config.name.clone(),
                    server: s.config.name.clone(),
                    configured: s.config.address.to_string(),
                    resolved: s.address(),
                    decided: s.is_decided(),
                    up: s.is_healthy(),
                    admin: s.admin.admin(),
                    weight: s.admin.weight(),
                })
            })
            .collect()
    }

    /// Takes over what the process this one replaces knew of its servers: each server of the
    /// same backend, name and configured address gets what an operator set (drain, maint, a
    /// weight) and, when decided, its health and resolved address. Servers not found, and
    /// undecided ones, start as usual. How many health states were taken over.
    pub fn adopt_health(&self, known: &[ServerHealth]) -> usize {
        let mut adopted = 0;
        for backend in &self.backends {
            for server in &backend.servers {
                let same = known.iter().find(|k| {
                    k.backend == backend.config.name && k.server == server.config.name && k.configured == server.config.address.to_string()
                });
                if let Some(known) = same {
                    server.admin.set_admin(known.admin);
                    server.admin.set_weight(known.weight);
                }
                if let Some(known) = same.filter(|k| k.decided) {
                    server.adopt_health(known.up, known.resolved, &backend.config.health);
                    adopted += 1;
                }
            }
        }
        adopted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(port: u16) -> halo_config::Config {
        let text = format!(
            "[[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:{port}\"]\nbackend = \"api\"\n\n[[backend]]\nname = \"api\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"1h\"\n[[backend.server]]\nname = \"a\"\naddress = \"127.0.0.1:9\"\n[[backend.server]]\nname = \"b\"\naddress = \"127.0.0.1:10\"\n"
        );
        halo_config::load_str("t.toml", &text).expect("valid").config
    }

    #[tokio::test]
    async fn a_new_balancer_takes_the_sockets_and_the_health_of_the_old_one() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let old = Balancer::start(&config(port), stopped.clone()).expect("old");
        let sockets: Vec<std::net::TcpListener> =
            old.listening_sockets().iter().map(|(_, fd)| std::net::TcpListener::from(fd.try_clone_to_owned().expect("dup"))).collect();
        assert_eq!(sockets.len(), 1);
        let (open, accepting) = tokio::sync::watch::channel(false);
        let new = Balancer::start_inheriting(&config(port), stopped, crate::Inherited { listeners: sockets, accepting, kernel: None })
            .expect("new");
        // The old one binds the port still: the new one could only take it over.
        assert_eq!(new.listening_sockets()[0].0.port(), port);
        let known = vec![
            ServerHealth {
                backend: "api".into(),
                server: "a".into(),
                configured: "127.0.0.1:9".into(),
                resolved: None,
                decided: true,
                up: true,
                admin: crate::Admin::Drain,
                weight: Some(7),
            },
            ServerHealth {
                backend: "api".into(),
                server: "b".into(),
                configured: "127.0.0.1:99".into(),
                resolved: None,
                decided: true,
                up: true,
                admin: crate::Admin::Maint,
                weight: None,
            },
        ];
        assert_eq!(new.adopt_health(&known), 1, "b's address changed: it starts as a new server");
        let health = new.server_health();
        assert!(health[0].up && health[0].decided);
        // What an operator set goes over with the server; a changed server starts afresh.
        assert_eq!((health[0].admin, health[0].weight), (crate::Admin::Drain, Some(7)));
        assert!(!health[1].up && !health[1].decided);
        assert_eq!((health[1].admin, health[1].weight), (crate::Admin::Ready, None));
        drop(open);
    }

    /// A bind's whole group of sockets goes over, and the new balancer binds nothing anew (the
    /// old one still listens: a new group could not be bound).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_socket_of_a_bind_goes_over() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let old = Balancer::start(&config(port), stopped.clone()).expect("old");
        let sockets: Vec<std::net::TcpListener> =
            old.listening_sockets().iter().map(|(_, fd)| std::net::TcpListener::from(fd.try_clone_to_owned().expect("dup"))).collect();
        assert_eq!(sockets.len(), 2, "one socket per worker thread");
        let (open, accepting) = tokio::sync::watch::channel(false);
        let new = Balancer::start_inheriting(&config(port), stopped, crate::Inherited { listeners: sockets, accepting, kernel: None })
            .expect("new");
        assert_eq!(new.listening_sockets().len(), 2);
        drop(open);
    }
}
