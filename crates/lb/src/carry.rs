//! An established connection relayed until it ends, then logged; or, when `halo upgrade` asks,
//! paused where halo holds none of its bytes and handed to the process that replaces this one,
//! which adopts it and relays on, the bytes counted so far carried along.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::connlog::{Outcome, Record};
use crate::established::{About, Connection, Established, outcome};
use crate::kernel;
use crate::kernel::carry::Joined;
use crate::proxy::{Ended, Mode, relay};
use crate::runtime::{BackendRuntime, FrontendRuntime, ServerRuntime};
use crate::slots::Slot;

/// Counters of a connection whose server is gone from the configuration.
static NOWHERE: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));

impl FrontendRuntime {
    /// Relays `connection` (holding `slot`) until it ends, then logs it; a relay paused for an
    /// upgrade is handed over instead. A removed server's connections get its backend's
    /// `drain_timeout`.
    pub(crate) async fn carry(&self, backend: &BackendRuntime, connection: Connection, slot: Option<Slot>) {
        let Connection { client, upstream, server, address, peer, accepted, queued, connecting, before, kernel } = connection;
        if let Some(server) = &server {
            server.stats.current.fetch_add(1, Ordering::Relaxed);
        }
        let server_name = server.as_ref().map_or("-", |s| s.config.name.as_str());
        let about = About { backend, server_name, address, peer, accepted };
        let ended = self.relay_to_end(&about, (client, upstream), server.as_ref(), before, kernel).await;
        if let Some(server) = &server {
            server.stats.current.fetch_sub(1, Ordering::Relaxed);
        }
        drop(slot);
        let Some((outcome, up, down)) = ended else { return };
        match outcome {
            Outcome::Idle => tracing::debug!(frontend = %self.name, server = server_name, "closed after the idle timeout"),
            Outcome::Drained => tracing::debug!(frontend = %self.name, server = server_name, "closed: removed server's drain timeout"),
            _ => {}
        }
        if self.log.enabled() {
            self.log.write(&Record {
                client: peer,
                frontend: &self.name,
                backend: &backend.config.name,
                server: Some((server_name, address)),
                queued,
                connecting,
                total: accepted.elapsed(),
                bytes_up: up,
                bytes_down: down,
                outcome,
            });
        }
    }

    /// Relays until the connection ends: how, and the bytes each way (those relayed `before`
    /// included); `None` when it was handed over. A pause that comes when the handover has been
    /// called off is no end: it relays on. `joined`: the connection is in the kernel path already
    /// (handed over by the process this one replaced).
    async fn relay_to_end(
        &self,
        about: &About<'_>,
        (client, upstream): (TcpStream, TcpStream),
        server: Option<&Arc<ServerRuntime>>,
        before: (u64, u64),
        joined: Option<kernel::Joined>,
    ) -> Option<(Outcome, u64, u64)> {
        let counters = server.map_or((&NOWHERE.0, &NOWHERE.1), |s| (&s.stats.bytes_up, &s.stats.bytes_down));
        let mut retired = server.map(|s| s.retired.subscribe());
        let drain = about.backend.config.drain_timeout;
        let retired_then_drained = async {
            if let Some(retired) = &mut retired
                && retired.wait_for(|r| *r).await.is_err()
            {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(drain).await;
        };
        tokio::pin!(retired_then_drained);
        let pause = self.handover.pause();
        let mut total = before;
        let mut join_at = self.kernel.as_ref().and_then(|path| path.join_at(about.accepted));
        // A connection handed over in the kernel path goes on there; a new one joins it once it
        // has lived `kernel_after` (at once when that is zero: before halo reads a byte).
        let mut join_now = joined.is_some() || join_at.is_some_and(|at| at <= tokio::time::Instant::now());
        let (mut joined, mut client, mut upstream) = (joined, client, upstream);
        loop {
            if join_now {
                join_at = None;
                match self.join_kernel(client, upstream, joined.take()) {
                    Joined::Kernel(flow, sockets) => {
                        return self.relay_in_kernel(about, (flow, sockets), counters, &pause, total, retired_then_drained.as_mut()).await;
                    }
                    Joined::User(c, u) => (client, upstream) = (c, u),
                    Joined::Lost => return Some((Outcome::Error, total.0, total.1)),
                }
            }
            let (relayed, joining) = tokio::select! {
                relayed = self.relay_in_user_space((&client, &upstream), about, counters, &pause, join_at) => relayed,
                () = &mut retired_then_drained => return Some((Outcome::Drained, total.0, total.1)),
            };
            total = (total.0 + relayed.up, total.1 + relayed.down);
            // Paused to join the kernel path: at rest, halo holds none of its bytes.
            join_now = relayed.ended == Ended::Paused && joining && !*pause.borrow();
            if join_now {
                continue;
            }
            match self.after_user_relay(relayed.ended, (client, upstream), about, total) {
                Ok(outcome) => return outcome.map(|o| (o, total.0, total.1)),
                Err((c, u)) => (client, upstream) = (c, u),
            }
        }
    }

    /// What a user-space relay that ended as `ended` comes to: its outcome (`None`: handed over),
    /// or its sockets back to relay on (a handover called off meanwhile).
    fn after_user_relay(
        &self,
        ended: Ended,
        (client, upstream): (TcpStream, TcpStream),
        about: &About<'_>,
        total: (u64, u64),
    ) -> Result<Option<Outcome>, (TcpStream, TcpStream)> {
        match ended {
            Ended::Error => {
                // A reset on one side is a reset on the other.
                crate::proxy::abort(&client);
                crate::proxy::abort(&upstream);
                Ok(Some(Outcome::Error))
            }
            Ended::Closed | Ended::Idle => Ok(Some(outcome(ended))),
            Ended::Paused => {
                let sockets = match (client.into_std(), upstream.into_std()) {
                    (Ok(client), Ok(server)) => (client, server),
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!(frontend = %self.name, error = %e, "a paused connection could not be handed over: closed");
                        return Ok(None);
                    }
                };
                match self.keep(self.established(about, sockets, total, None)) {
                    Ok(()) => Ok(None),
                    Err(back) => match (TcpStream::from_std(back.client), TcpStream::from_std(back.server)) {
                        (Ok(c), Ok(u)) => Err((c, u)),
                        _ => Ok(Some(Outcome::Error)),
                    },
                }
            }
        }
    }

    /// The user-space relay, paused when `halo upgrade` asks (`pause`) or, from `join_at`, to join
    /// the kernel path; whether it was asked to join.
    async fn relay_in_user_space(
        &self,
        sockets: (&TcpStream, &TcpStream),
        about: &About<'_>,
        counters: (&AtomicU64, &AtomicU64),
        pause: &crate::proxy::Pause,
        join_at: Option<tokio::time::Instant>,
    ) -> (crate::proxy::Relayed, bool) {
        let idle = about.backend.config.idle_timeout;
        let Some(join_at) = join_at else { return (relay(sockets, idle, counters, Mode::Splice, pause).await, false) };
        let (ask, asked) = tokio::sync::watch::channel(*pause.borrow());
        let (mut upgrade, mut watching, mut joining) = (pause.clone(), true, false);
        let relaying = relay(sockets, idle, counters, Mode::Splice, &asked);
        tokio::pin!(relaying);
        loop {
            tokio::select! {
                relayed = &mut relaying => return (relayed, joining),
                changed = upgrade.changed(), if watching => match changed {
                    Ok(()) => {
                        ask.send_replace(*upgrade.borrow() || joining);
                    }
                    Err(_) => watching = false,
                },
                () = tokio::time::sleep_until(join_at), if !joining => {
                    joining = true;
                    ask.send_replace(true);
                }
            }
        }
    }

    /// What the process that replaces this one is handed of a paused connection.
    pub(crate) fn established(
        &self,
        about: &About<'_>,
        (client, server): (std::net::TcpStream, std::net::TcpStream),
        (bytes_up, bytes_down): (u64, u64),
        kernel: Option<kernel::Joined>,
    ) -> Established {
        Established {
            client,
            server,
            frontend: self.name.clone(),
            backend: about.backend.config.name.clone(),
            server_name: about.server_name.to_string(),
            server_address: about.address,
            peer: about.peer,
            age: about.accepted.elapsed(),
            bytes_up,
            bytes_down,
            kernel,
        }
    }

    /// Keeps a paused connection for the process that replaces this one; back when the
    /// handover was called off meanwhile.
    pub(crate) fn keep(&self, established: Established) -> Result<(), Box<Established>> {
        let mut paused = self.handover.kept();
        match paused.as_mut() {
            Some(kept) => {
                kept.push(established);
                Ok(())
            }
            None => Err(Box::new(established)),
        }
    }

    /// Relays on a connection the process this one replaced handed over: on its server when the
    /// backend still has it (by name), else with the backend's `drain_timeout`; in a
    /// slot when one is free (a connection established before is never refused: over the cap,
    /// it is served all the same).
    pub(crate) async fn adopt(&self, established: Established) {
        let backend = self.backend();
        // By name: a server given by name may resolve elsewhere now; the socket stays where it is.
        let server = (backend.config.name == established.backend)
            .then(|| backend.servers.iter().find(|s| s.config.name == established.server_name).cloned())
            .flatten();
        let sockets = [established.client, established.server].map(|s| s.set_nonblocking(true).and_then(|()| TcpStream::from_std(s)));
        let [client, upstream] = match sockets {
            [Ok(client), Ok(upstream)] => [client, upstream],
            [Err(e), _] | [_, Err(e)] => {
                tracing::warn!(frontend = %self.name, error = %e, "a connection handed over could not be adopted: closed");
                return;
            }
        };
        let accepted = Instant::now().checked_sub(established.age).unwrap_or_else(Instant::now);
        let connection = Connection {
            client,
            upstream,
            server,
            address: established.server_address,
            peer: established.peer,
            accepted,
            queued: Duration::ZERO,
            connecting: Duration::ZERO,
            before: (established.bytes_up, established.bytes_down),
            kernel: established.kernel,
        };
        let slot = self.slots.adopt();
        self.carry(&backend, connection, slot).await;
    }
}
