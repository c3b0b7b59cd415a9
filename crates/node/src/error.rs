//! Why the node could not start or collect its garbage.

use crate::containers::ContainerError;
use crate::ids::OrgId;

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The organization's key could not be read.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyFileError),
    /// The broker settings name no usable address.
    #[error("broker: {0}")]
    Broker(#[from] crate::broker::endpoints::EndpointsError),
    /// The server's address or TLS settings are unusable.
    #[error("server: {0}")]
    Server(String),
    /// A pinned fingerprint is malformed.
    #[error("peers.pins: {0}")]
    Pin(#[from] crate::keys::KeyParseError),
    /// The store of trusted keys could not be used.
    #[error(transparent)]
    Trust(#[from] crate::keys::TrustError),
    /// The state directory could not be opened.
    #[error("state directory {path}: {source}")]
    State {
        /// The directory.
        path: std::path::PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Docker, the network or the firewall could not be set up.
    #[error(transparent)]
    Containers(#[from] ContainerError),
    /// The metrics listener could not listen.
    #[error("[metrics] listen = {addr}: cannot listen ({source}); pick a free address or leave it unset")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The endpoint could not listen.
    #[error("the node-local endpoint cannot listen on {addr}: {source}")]
    Endpoint {
        /// The address.
        addr: std::net::SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The API key belongs to another organization than the configured one.
    #[error("the API key belongs to organization {actual}, but node.organization is {configured}")]
    WrongOrganization {
        /// Configured.
        configured: OrgId,
        /// Per the server.
        actual: OrgId,
    },
}
