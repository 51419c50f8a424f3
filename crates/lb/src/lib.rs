//! halo's TCP load balancer for API servers: listeners, server selection, active health checks
//! (TCP, TLS, HTTPS over rustls) with rise/fall hysteresis, retries and redispatch, and the
//! proxy data path. Driven by the frontends and backends of the config model.

pub mod admin;
pub mod adopter;
pub mod backend;
pub mod balancer;
mod carry;
pub mod connlog;
pub mod established;
pub mod handover;
pub mod health;
pub mod kernel;
pub mod listener;
mod lock;
pub mod probe;
pub mod proxy;
pub mod proxy_protocol;
pub mod resolve;
pub mod runtime;
pub mod select;
pub mod server;
pub mod silent;
mod slots;
mod sockopt;
pub mod tls;

pub use admin::{Admin, Order, Ordered};
pub use adopter::Adopter;
pub use balancer::{Balancer, Changes, Inherited};
pub use handover::ServerHealth;

/// Why the balancer could not start.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// A listener could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The bind address.
        address: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A backend's TLS settings are unusable.
    #[error("backend {backend}: health-check TLS")]
    Tls {
        /// The backend.
        backend: String,
        /// The cause.
        #[source]
        source: tls::TlsError,
    },
    /// A listening socket handed over by the process this one replaces is unusable.
    #[error("a listening socket handed over is unusable")]
    Inherited(#[source] std::io::Error),
    /// `[balancer] forwarding = "kernel"` and the kernel data path could not be set up.
    #[error("[balancer] forwarding = \"kernel\"")]
    Kernel(#[source] kernel::KernelError),
    /// A frontend names a backend that does not exist (the loader prevents this).
    #[error("unknown backend {0}")]
    UnknownBackend(String),
}

/// Why an operator's order for a server was refused (nothing changed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OrderError {
    /// No backend of that name.
    #[error("no backend named {0:?}")]
    UnknownBackend(String),
    /// No server of that name in the backend.
    #[error("backend {backend} has no server named {server:?}")]
    UnknownServer {
        /// The backend.
        backend: String,
        /// The name asked for.
        server: String,
    },
    /// A weight out of range.
    #[error("weight {0} is out of range (0 to 256; 0 takes no new connections)")]
    Weight(u32),
}
