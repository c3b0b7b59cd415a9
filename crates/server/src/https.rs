//! The server side of TLS: a certificate that is reloaded from its files on SIGHUP and when they
//! change (so a renewed certificate is used without a restart, and a broken renewal keeps the
//! old one), and serving a warp filter over it with graceful shutdown.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use fedq_service::reload::Stamps;
use fedq_tls::{TlsError, load_certs, load_key, provider};

/// The server's certificate and key, swapped in place when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Both files' versions when first loaded: where watching for a change starts.
    loaded: Stamps,
}

fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| TlsError::Setup {
        what: format!("{} with {}", cert_file.display(), key_file.display()),
        detail: e.to_string(),
    })
}

impl ReloadingCert {
    /// Loads the certificate chain and key; fails if they are unusable or do not match.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, TlsError> {
        let loaded = Stamps::take(vec![cert_file.to_owned(), key_file.to_owned()]);
        let key = certified_key(cert_file, key_file)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(Arc::new(key)),
            loaded,
        }))
    }

    /// Loads the files again. On failure the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(&self.cert_file, &self.key_file)?;
        *self.current.write().expect("not poisoned") = Arc::new(key);
        Ok(())
    }

    /// Reloads on SIGHUP and when the files change, until `stop` turns true.
    pub async fn watch(self: Arc<Self>, stop: watch::Receiver<bool>) {
        fedq_service::reload::watch(self.loaded.clone(), stop, |why| match self.reload() {
            Ok(()) => tracing::info!(cert = %self.cert_file.display(), why, "TLS certificate reloaded"),
            Err(e) => {
                tracing::error!(error = %e, why, "TLS certificate not reloaded; the previous one stays in use")
            }
        })
        .await;
    }

    /// A rustls server configuration that always presents the current certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup { what: "the HTTPS listener".into(), detail: e.to_string() })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("not poisoned").clone())
    }
}

/// How long clients may take, and how many may be connected at once.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// For the TLS handshake, and for each request's headers (also while a kept-alive
    /// connection is idle between requests).
    pub header_read_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// Serves `filter` over TLS on `listener` until `shutdown` turns true, then lets the
/// connections in flight finish.
pub async fn serve<F, R>(
    listener: tokio::net::TcpListener,
    config: rustls::ServerConfig,
    filter: F,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    F: warp::Filter<Extract = (R,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
    R: warp::Reply,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        // A free slot first: past the limit, clients wait in the listen backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = stopped(&mut shutdown) => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(WithPeer {
            inner: warp::service(filter.clone()),
            peer,
        });
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            // A client that opens a connection and never finishes the handshake is dropped.
            let tls = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let io = hyper_util::rt::TokioIo::new(tls);
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            // Without a timer hyper enforces no timeout at all. With one, a connection whose
            // next request's headers do not arrive in time is closed (hyper starts the clock
            // again each time a kept-alive connection turns idle); HTTP/2 connections are
            // pinged and closed when the pings go unanswered.
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            builder
                .http2()
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Some(limits.header_read_timeout))
                .keep_alive_timeout(limits.header_read_timeout);
            let connection = builder.serve_connection_with_upgrades(io, service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}

/// The TCP peer of a request served over TLS here (warp's own `addr::remote` is filled only by
/// `warp::serve`), for handlers that count by address, such as the login throttle.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// A service that tags each request with its connection's peer.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: std::net::SocketAddr,
}

impl<S, B> tower_service::Service<warp::http::Request<B>> for WithPeer<S>
where
    S: tower_service::Service<warp::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: warp::http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(PeerAddr(self.peer));
        self.inner.call(request)
    }
}

/// Resolves when `stop` turns true (the channel's guard is not held across an await).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
