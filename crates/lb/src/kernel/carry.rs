//! A frontend's connections in the kernel path: joining it (or staying in user space), relaying
//! there until the end, and the pause of `halo upgrade` (a connection whose bytes the kernel
//! moves both ways is handed over as it is: its sockets stay in the maps, which go to the new
//! process with the listeners; one with a direction in user space stays to be drained).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpStream;

use super::Flow;
use super::relay::{Outcome as KernelOutcome, relay};
use crate::connlog::Outcome;
use crate::established::{About, outcome};
use crate::proxy::Pause;
use crate::runtime::FrontendRuntime;

/// Where a connection's bytes go.
pub(crate) enum Joined {
    /// The kernel moves them.
    Kernel(Flow, (std::net::TcpStream, std::net::TcpStream)),
    /// halo's relay does.
    User(TcpStream, TcpStream),
    /// Its sockets were lost on the way (closed).
    Lost,
}

impl FrontendRuntime {
    /// Puts the connection in the kernel data path when this balancer has one and it takes it
    /// (or it is there already: `joined`, handed over); else it stays with user space.
    pub(crate) fn join_kernel(&self, client: TcpStream, upstream: TcpStream, joined: Option<super::Joined>) -> Joined {
        let Some(path) = &self.kernel else {
            if joined.is_some() {
                tracing::warn!(frontend = %self.name, "a connection handed over in the kernel path, which this process has not: relayed in user space until the old process ends");
            }
            return Joined::User(client, upstream);
        };
        // Out of tokio's hands: the bytes the kernel moves must wake nobody.
        let sockets = match (client.into_std(), upstream.into_std()) {
            (Ok(client), Ok(server)) => (client, server),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(frontend = %self.name, error = %e, "a connection's sockets could not be taken from the runtime: closed");
                return Joined::Lost;
            }
        };
        let flow = match joined {
            Some(joined) => match path.rejoin(&sockets.0, &sockets.1, joined) {
                Ok(flow) => Ok(flow),
                Err(e) => {
                    // Its sockets are in the map: user space cannot relay them in order.
                    tracing::warn!(frontend = %self.name, error = %e, "a kernel-forwarded connection handed over could not be watched here: closed");
                    return Joined::Lost;
                }
            },
            None => path.join(&sockets.0, &sockets.1),
        };
        match flow {
            Ok(flow) => {
                self.stats.kernel_forwarded.fetch_add(1, Ordering::Relaxed);
                Joined::Kernel(flow, sockets)
            }
            Err(e) => {
                tracing::debug!(frontend = %self.name, error = %e, "a connection stays in user space");
                match (TcpStream::from_std(sockets.0), TcpStream::from_std(sockets.1)) {
                    (Ok(client), Ok(upstream)) => Joined::User(client, upstream),
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!(frontend = %self.name, error = %e, "a connection's sockets could not go back to the runtime: closed");
                        Joined::Lost
                    }
                }
            }
        }
    }

    /// Relays a connection in the kernel path until it ends (how, and the bytes each way, those
    /// of `total` included), `drained` comes first (its server removed), or it is handed over
    /// (`None`).
    pub(crate) async fn relay_in_kernel(
        &self,
        about: &About<'_>,
        (mut flow, mut sockets): (Flow, (std::net::TcpStream, std::net::TcpStream)),
        counters: (&AtomicU64, &AtomicU64),
        pause: &Pause,
        mut total: (u64, u64),
        mut drained: Pin<&mut impl Future<Output = ()>>,
    ) -> Option<(Outcome, u64, u64)> {
        loop {
            let ended = tokio::select! {
                ended = relay(flow, sockets, about.backend.config.idle_timeout, counters, pause) => ended,
                () = &mut drained => return Some((Outcome::Drained, total.0, total.1)),
            };
            let (paused, paused_sockets, relayed) = match ended {
                KernelOutcome::Ended(relayed) => return Some((outcome(relayed.ended), total.0 + relayed.up, total.1 + relayed.down)),
                KernelOutcome::Paused(flow, sockets, relayed) => (*flow, sockets, relayed),
            };
            total = (total.0 + relayed.up, total.1 + relayed.down);
            let joined = paused.joined();
            match self.keep(self.established(about, paused_sockets, total, Some(joined))) {
                Ok(()) => {
                    // Its entries stay in the maps, for the process it goes to.
                    paused.release();
                    return None;
                }
                Err(back) => {
                    (flow, sockets) = (paused, (back.client, back.server));
                }
            }
        }
    }
}
