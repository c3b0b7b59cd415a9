//! The broker nodes a server or node may connect to: the URL of its settings (credentials,
//! virtual host, first host) and further `host:port` addresses of the same RabbitMQ cluster.
//! Each connection attempt starts with the address after the one that last failed, so that a
//! reconnect after a broker node dies goes to a live one. Queues are quorum queues replicated
//! across the cluster, so any node serves every queue.

use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret as _, SecretString};

/// Settings that do not name a broker.
#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    /// The URL does not parse (its text is not repeated: it holds a password).
    #[error("the broker URL is not an AMQP URL")]
    Url,
    /// An alternate address is not `host:port`.
    #[error("broker address {0:?} is not host:port")]
    Address(String),
    /// Plain AMQP beyond loopback, or unusable TLS files.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Where the broker is.
#[derive(Debug)]
pub struct Endpoints {
    uris: Vec<AMQPUri>,
    next: AtomicUsize,
    /// The rustls client configuration of `amqps://`, made from the same `ClientTls` settings
    /// as every other hop: the CA file alone when one is set (lapin's own connector would add
    /// the platform's roots beside it, so that a TLS-inspecting proxy with a locally trusted CA
    /// could read broker passwords), the client identity for mutual TLS.
    tls: Arc<rustls::ClientConfig>,
}

impl Endpoints {
    /// `url` first, then each of `alternates` with the same credentials and virtual host, all
    /// over TLS with `tls` when the URL is `amqps://`. `setting` names the URL's setting in
    /// errors (`broker.url`).
    pub fn new(
        url: &SecretString,
        alternates: &[String],
        tls: &crate::tls::ClientTls,
        setting: &str,
    ) -> Result<Self, EndpointsError> {
        let mut first = AMQPUri::from_str(url.expose_secret()).map_err(|_| EndpointsError::Url)?;
        // The URI parser keeps only domain names: an IP address in the URL would become
        // `localhost`, connect there, and pass the plain-text rule as loopback. The host is read
        // from the URL itself instead.
        if let Some(host) = host_of(url.expose_secret()) {
            first.authority.host = host;
        }
        let scheme = scheme_name(&first.scheme);
        let mut uris = vec![first.clone()];
        for address in alternates {
            let (host, port) = address
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .filter(|(h, _)| !h.is_empty())
                .ok_or_else(|| EndpointsError::Address(address.clone()))?;
            let mut uri = first.clone();
            uri.authority.host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            uri.authority.port = port;
            uris.push(uri);
        }
        for uri in &uris {
            tls.check_plaintext(setting, scheme, &uri.authority.host)?;
        }
        let tls =
            tls.rustls_config(&format!("{}.tls", setting.rsplit_once('.').map_or(setting, |(s, _)| s)))?;
        Ok(Self { uris, next: AtomicUsize::new(0), tls: Arc::new(tls) })
    }

    /// The user name of the URL.
    pub fn username(&self) -> &str {
        &self.uris[0].authority.userinfo.username
    }

    /// The URL's scheme, host and port, without credentials or virtual host
    /// (`amqps://broker.example:5671`): what nodes are told to connect to by default.
    pub fn public_url(&self) -> String {
        let uri = &self.uris[0];
        let scheme = scheme_name(&uri.scheme);
        let host = &uri.authority.host;
        let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        format!("{scheme}://{host}:{}", uri.authority.port)
    }

    /// Every address, as `host:port`.
    pub fn addresses(&self) -> Vec<String> {
        self.uris.iter().map(|u| format!("{}:{}", u.authority.host, u.authority.port)).collect()
    }

    /// Connects to the first address that accepts, trying each once from where the last
    /// attempt left off. Returns the connection and the address it went to.
    pub async fn connect(&self) -> Result<(Connection, String), lapin::Error> {
        let start = self.next.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.uris.len() {
            let index = (start + i) % self.uris.len();
            let uri = self.uris[index].clone();
            let address = format!("{}:{}", uri.authority.host, uri.authority.port);
            let runtime = lapin::runtime::default_runtime()?;
            let tls = self.tls.clone();
            let connected = Connection::connector(
                uri,
                runtime,
                async move |uri: AMQPUri, runtime| {
                    let host = uri.authority.host.clone();
                    let addresses: Vec<std::net::SocketAddr> =
                        tokio::net::lookup_host((host.as_str(), uri.authority.port)).await?.collect();
                    let stream = AsyncTcpStream::connect(&runtime, addresses).await?;
                    Ok(match uri.scheme {
                        AMQPScheme::AMQP => stream,
                        AMQPScheme::AMQPS => {
                            stream.into_rustls(&RustlsConnector::from(tls.clone()), &host).await?
                        }
                    })
                },
                ConnectionProperties::default(),
            )
            .await;
            match connected {
                Ok(connection) => {
                    // The next reconnect starts past this one: if it died, another is tried first.
                    self.next.store(index + 1, Ordering::Relaxed);
                    return Ok((connection, address));
                }
                Err(e) => {
                    tracing::debug!(%address, error = %e, "broker address refused the connection");
                    last = Some(e);
                }
            }
        }
        self.next.store(start + 1, Ordering::Relaxed);
        Err(last.expect("there is at least one address"))
    }
}

/// `amqp` or `amqps`, as URLs write it.
fn scheme_name(scheme: &AMQPScheme) -> &'static str {
    match scheme {
        AMQPScheme::AMQP => "amqp",
        AMQPScheme::AMQPS => "amqps",
    }
}

/// The host of an `amqp(s)://[user[:password]@]host[:port][/vhost]` URL, without the brackets
/// of an IPv6 literal.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_address_in_the_url_is_the_host_connected_to_and_checked() {
        let tls = crate::tls::ClientTls::default();
        let remote = SecretString::from("amqp://u:secret@192.0.2.7:5672/v".to_owned());
        let e = Endpoints::new(&remote, &[], &tls, "broker.url").unwrap_err();
        assert!(e.to_string().contains("192.0.2.7"), "a remote address is not loopback: {e}");
        let lax = crate::tls::ClientTls { allow_plaintext: true, ..Default::default() };
        assert_eq!(Endpoints::new(&remote, &[], &lax, "broker.url").unwrap().addresses(), ["192.0.2.7:5672"]);
        let v6 = SecretString::from("amqps://u:p@[2001:db8::5]:5671/v".to_owned());
        assert_eq!(Endpoints::new(&v6, &[], &tls, "broker.url").unwrap().addresses(), ["2001:db8::5:5671"]);
        assert_eq!(host_of("amqp://rabbit.fedq.test/v").as_deref(), Some("rabbit.fedq.test"));
    }

    #[test]
    fn the_public_url_keeps_the_host_as_written_and_drops_the_credentials() {
        let lax = crate::tls::ClientTls { allow_plaintext: true, ..Default::default() };
        let ip = SecretString::from("amqp://fedq-server:secret@192.0.2.7:5672/v".to_owned());
        let endpoints = Endpoints::new(&ip, &[], &lax, "broker.url").unwrap();
        assert_eq!(
            (endpoints.username(), endpoints.public_url().as_str()),
            ("fedq-server", "amqp://192.0.2.7:5672")
        );
        let v6 = SecretString::from("amqps://u:p@[2001:db8::5]:5671/v".to_owned());
        let endpoints = Endpoints::new(&v6, &[], &lax, "broker.url").unwrap();
        assert_eq!(endpoints.public_url(), "amqps://[2001:db8::5]:5671");
    }

    #[test]
    fn alternates_keep_the_credentials_and_virtual_host() {
        let url = SecretString::from("amqp://fedq:secret@rabbit-1:5672/fedq".to_owned());
        let lax = crate::tls::ClientTls { allow_plaintext: true, ..Default::default() };
        let e = Endpoints::new(&url, &["rabbit-2:5672".into(), "127.0.0.3:5673".into()], &lax, "broker.url")
            .unwrap();
        assert_eq!(e.addresses(), ["rabbit-1:5672", "rabbit-2:5672", "127.0.0.3:5673"]);
        for uri in &e.uris {
            assert_eq!(uri.authority.userinfo.username, "fedq");
            assert_eq!(uri.authority.userinfo.password, "secret");
            assert_eq!(uri.vhost, "fedq");
        }
    }

    #[test]
    fn bad_addresses_are_refused_without_echoing_the_url() {
        let url = SecretString::from("amqp://fedq:secret@rabbit-1:5672/fedq".to_owned());
        let tls = crate::tls::ClientTls::default();
        let new = |url: &SecretString, alt: &[String]| Endpoints::new(url, alt, &tls, "broker.url");
        assert!(matches!(new(&url, &["rabbit-2".into()]), Err(EndpointsError::Address(_))));
        assert!(matches!(new(&url, &[":5672".into()]), Err(EndpointsError::Address(_))));
        let bad = SecretString::from("http://fedq:secret@x".to_owned());
        let e = new(&bad, &[]).unwrap_err();
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn plain_amqp_goes_only_to_loopback_unless_allowed() {
        let tls = crate::tls::ClientTls::default();
        let local = SecretString::from("amqp://u:secret@127.0.0.1:5672/v".to_owned());
        assert!(Endpoints::new(&local, &[], &tls, "broker.url").is_ok());
        // A loopback URL with a remote alternate is refused too.
        let e = Endpoints::new(&local, &["192.0.2.2:5672".into()], &tls, "broker.url").unwrap_err();
        assert!(e.to_string().contains("amqps://"), "{e}");
        assert!(!e.to_string().contains("secret"));
        let remote = SecretString::from("amqps://u:secret@192.0.2.2:5671/v".to_owned());
        assert!(Endpoints::new(&remote, &[], &tls, "broker.url").is_ok());
    }
}
