//! An established connection as it crosses `halo upgrade` in a message: what is known of it,
//! its sockets attached apart, and what a kernel-forwarded one needs to go on.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// An established connection handed over, as [`halo_lb::established::Established`] without its
/// sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionJson {
    /// Its frontend, backend and server, by name.
    pub frontend: String,
    /// Its backend.
    pub backend: String,
    /// Its server.
    pub server: String,
    /// The server's address.
    pub server_address: SocketAddr,
    /// The client's address.
    pub client: SocketAddr,
    /// Milliseconds since it was accepted.
    pub age_ms: u64,
    /// Bytes relayed so far, client to server.
    pub bytes_up: u64,
    /// Bytes relayed so far, server to client.
    pub bytes_down: u64,
    /// In the kernel data path: what it needs to go on there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelJoinedJson>,
}

/// A connection in the kernel data path, as [`halo_lb::kernel::Joined`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelJoinedJson {
    /// Bytes written to the client's and the server's socket before they joined.
    pub written_before: [u64; 2],
    /// Bytes read from each before they joined.
    pub read_before: [u64; 2],
    /// Bytes written to each since, counted already.
    pub counted: [u64; 2],
    /// Bytes of each direction user space wrote on while the program held it.
    pub copied: [u64; 2],
}

impl ConnectionJson {
    /// What is known of `e`.
    pub fn of(e: &halo_lb::established::Established) -> Self {
        Self {
            frontend: e.frontend.clone(),
            backend: e.backend.clone(),
            server: e.server_name.clone(),
            server_address: e.server_address,
            client: e.peer,
            age_ms: u64::try_from(e.age.as_millis()).unwrap_or(u64::MAX),
            bytes_up: e.bytes_up,
            bytes_down: e.bytes_down,
            kernel: e.kernel.map(|k| KernelJoinedJson {
                written_before: k.written_before,
                read_before: k.read_before,
                counted: k.counted,
                copied: k.copied,
            }),
        }
    }

    /// The connection again, with its two sockets.
    pub fn with_sockets(self, client: std::os::fd::OwnedFd, server: std::os::fd::OwnedFd) -> halo_lb::established::Established {
        halo_lb::established::Established {
            client: std::net::TcpStream::from(client),
            server: std::net::TcpStream::from(server),
            frontend: self.frontend,
            backend: self.backend,
            server_name: self.server,
            server_address: self.server_address,
            peer: self.client,
            age: std::time::Duration::from_millis(self.age_ms),
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            kernel: self.kernel.map(|k| halo_lb::kernel::Joined {
                written_before: k.written_before,
                read_before: k.read_before,
                counted: k.counted,
                copied: k.copied,
            }),
        }
    }
}
