//! halo's TCP load balancer for API servers: listeners, server selection, active health checks
//! (TCP, TLS, HTTPS over rustls) with rise/fall hysteresis, retries and redispatch, and the
//! proxy data path. Driven by the frontends and backends of the config model.

pub mod balancer;
mod carry;
pub mod connlog;
pub mod established;
pub mod handover;
pub mod health;
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
pub mod tls;

pub use balancer::{Adopter, Balancer, Changes, Inherited};
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
    /// A frontend names a backend that does not exist (the loader prevents this).
    #[error("unknown backend {0}")]
    UnknownBackend(String),
}
