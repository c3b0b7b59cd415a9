//! TLS on every hop, on this machine: a server serving HTTPS with a certificate from the
//! development CA that `scripts/services` made, reaching PostgreSQL (`sslmode=require`) and
//! RabbitMQ (AMQPS on 5671) over TLS verified against that CA; clients that refuse a certificate
//! from another CA, or none, with an error that says what to do; and a certificate replaced
//! while the server runs, taken up without a restart.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fedq::client::{Client, ClientError};
use fedq::tls::{ClientTls, devca};
use secrecy::{ExposeSecret as _, SecretString};
use support::{ROOT_PASSWORD, eventually, free_port, prepare};

const DEV_TLS: &str = "/var/lib/fedq-dev/tls";

fn dev(file: &str) -> PathBuf {
    Path::new(DEV_TLS).join(file)
}

fn trusting(ca: &Path) -> ClientTls {
    ClientTls { ca_file: Some(ca.to_owned()), ..ClientTls::default() }
}

/// Whether an HTTPS server at `base` answers its health route to a client trusting `ca`.
async fn healthy(base: &str, ca: &Path) -> Result<(), String> {
    let http = trusting(ca).http_client("test", Duration::from_secs(5)).unwrap();
    let response = http.get(format!("{base}/api/v1/health")).send().await.map_err(|e| format!("{e:?}"))?;
    if response.status() == 200 { Ok(()) } else { Err(format!("status {}", response.status())) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_speaks_tls_on_every_hop() {
    let (mut config, db_name, vhost) = prepare().await;
    config.http.tls_cert = Some(dev("localhost.pem"));
    config.http.tls_key = Some(dev("localhost.key"));
    config.database.url =
        SecretString::from(format!("postgres://fedq:fedq-dev@localhost:5432/{db_name}?sslmode=require"));
    config.database.tls = trusting(&dev("ca.pem"));
    config.broker.url = SecretString::from(format!("amqps://guest:guest@localhost:5671/{vhost}"));
    config.broker.tls = trusting(&dev("ca.pem"));
    let server = fedq::server::start(config.clone()).await.expect("the server starts over TLS");
    let base = format!("https://localhost:{}", server.addr.port());
    eventually(30, "the HTTPS server to be healthy (database and broker over TLS)", || async {
        healthy(&base, &dev("ca.pem")).await.ok()
    })
    .await;

    // Every connection of the server to PostgreSQL is TLS.
    let (sql, connection) =
        tokio_postgres::connect(support::PG_ADMIN_URL, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = sql
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
            &[&db_name],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "the server holds connections to its database");
    assert!(rows.iter().all(|r| r.get::<_, bool>(0)), "every database connection is TLS");
    // And every connection to the broker.
    // The management API lists connections once its statistics have caught up.
    let connections = eventually(30, "the server's broker connections to be listed", || async {
        let listed: serde_json::Value = reqwest::Client::new()
            .get(format!("http://127.0.0.1:15672/api/vhosts/{vhost}/connections"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        listed.as_array().filter(|c| !c.is_empty()).cloned()
    })
    .await;
    assert!(connections.iter().all(|c| c["ssl"] == true), "{connections:?}");

    // A client trusting the CA logs in; one trusting another CA, or the system's roots, is
    // refused with an error that says what to do.
    Client::login(&base, &trusting(&dev("ca.pem")), "root", ROOT_PASSWORD).await.expect("login over HTTPS");
    let other = tempfile::tempdir().unwrap();
    devca::create_ca(other.path(), "another CA").unwrap();
    for tls in [trusting(&other.path().join("ca.pem")), ClientTls::default()] {
        let refused = Client::login(&base, &tls, "root", ROOT_PASSWORD).await.unwrap_err();
        assert!(matches!(refused, ClientError::Unreachable { .. }), "{refused}");
        let text = refused.to_string();
        assert!(text.contains("certificate") && text.contains("--ca-file"), "{text}");
        assert!(!text.contains(ROOT_PASSWORD));
    }
    // Plain HTTP to the HTTPS port gets nowhere.
    let plain = format!("http://localhost:{}", server.addr.port());
    assert!(Client::login(&plain, &ClientTls::default(), "root", ROOT_PASSWORD).await.is_err());

    server.shutdown().await;
    let app = support::attach_stopped(config, db_name, vhost);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let (config, db_name, vhost) = prepare().await;
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    devca::create_ca(&first, "first CA").unwrap();
    devca::create_ca(&second, "second CA").unwrap();
    let live = dir.path().join("live");
    let issued = devca::issue(&first, "server", &["localhost".into()], &live).unwrap();

    let port = free_port();
    let log = dir.path().join("server.log");
    let mut child = support::spawn_server_process_with(
        &config,
        port,
        &log,
        "info",
        &[
            ("FEDQ_HTTP__TLS_CERT", issued.cert.display().to_string()),
            ("FEDQ_HTTP__TLS_KEY", issued.key.display().to_string()),
        ],
    );
    let base = format!("https://localhost:{port}");
    eventually(60, "the server to serve the first certificate", || async {
        healthy(&base, &first.join("ca.pem")).await.ok()
    })
    .await;

    // The files are replaced by a certificate of the second CA, as a renewal would: the server
    // picks it up by itself.
    let staged = devca::issue(&second, "server", &["localhost".into()], &dir.path().join("staged")).unwrap();
    std::fs::rename(&staged.key, &issued.key).unwrap();
    std::fs::rename(&staged.cert, &issued.cert).unwrap();
    eventually(30, "the server to serve the second certificate", || async {
        healthy(&base, &second.join("ca.pem")).await.ok()
    })
    .await;
    assert!(healthy(&base, &first.join("ca.pem")).await.is_err(), "the first certificate is gone");

    // A broken renewal keeps the working certificate; SIGHUP reloads on demand.
    std::fs::write(&issued.cert, "not a certificate").unwrap();
    let status = std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    eventually(30, "the failed reload to be logged", || async {
        std::fs::read_to_string(&log).unwrap().contains("TLS certificate not reloaded").then_some(())
    })
    .await;
    healthy(&base, &second.join("ca.pem")).await.expect("still serving the working certificate");
    assert!(child.try_wait().unwrap().is_none(), "the server is still running");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(config.database.url.expose_secret()), "no secret in the log");

    child.kill().unwrap();
    child.wait().unwrap();
    support::attach_stopped(config, db_name, vhost).cleanup().await;
}

/// A client that finishes the TLS handshake and then trickles its request's headers a byte at a
/// time, one that opens connections and sends nothing, and one that keeps a connection idle
/// after a request are each dropped after `http.header_read_timeout_secs`; meanwhile, and with
/// `http.max_connections` held by such clients, an honest client is served once a slot frees.
/// (Without hyper's timer, the listener enforced no timeout after the handshake.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_dropped_and_cannot_hold_every_connection() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut config, db_name, vhost) = prepare().await;
    // Removes the test's database and virtual host even when an assertion fails.
    let app = support::attach_stopped(config.clone(), db_name, vhost);
    config.http.tls_cert = Some(dev("localhost.pem"));
    config.http.tls_key = Some(dev("localhost.key"));
    config.http.header_read_timeout_secs = 2;
    config.http.max_connections = 4;
    let server = fedq::server::start(config).await.expect("the server starts over TLS");
    let base = format!("https://localhost:{}", server.addr.port());
    eventually(30, "the HTTPS server to be healthy", || async { healthy(&base, &dev("ca.pem")).await.ok() })
        .await;

    let tls = std::sync::Arc::new(trusting(&dev("ca.pem")).rustls_config("test").unwrap());
    let connect = || {
        let tls = tls.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.unwrap()
        }
    };
    // The trickler: a request line, then a header byte every 500 ms. The server must close the
    // connection (a read ends) although bytes keep coming.
    let mut trickler = connect().await;
    trickler.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let dropped = loop {
        if trickler.write_all(b"X").await.is_err() {
            break true;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(500), trickler.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => break true,
            Err(_) if started.elapsed() > Duration::from_secs(60) => break false,
            Err(_) => {}
        }
    };
    assert!(dropped, "a client trickling its headers was kept for a minute");

    // An idle kept-alive connection after one request is closed too.
    let mut idle = connect().await;
    idle.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1"), "the request was answered");
    assert!(closed.is_ok(), "an idle kept-alive connection was kept for a minute");

    // Every slot held by clients that connect and send nothing: an honest client is served
    // once they are dropped.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    eventually(60, "an honest client to be served beside silent ones", || async {
        healthy(&base, &dev("ca.pem")).await.ok()
    })
    .await;
    drop(silent);
    server.shutdown().await;
    app.cleanup().await;
}

/// The broker's certificate is signed by a CA the system trusts (here `SSL_CERT_FILE`, as a
/// hospital's TLS-inspecting proxy would be trusted), while `broker.tls.ca_file` names another
/// CA: the connection is refused, because AMQPS trusts the configured CA alone, like every
/// other hop. (lapin's own connector added the configured CA to the platform's roots and
/// connected.) The same server, given the broker's own CA, connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_trusts_the_configured_ca_alone() {
    let (mut config, db_name, vhost) = prepare().await;
    let app = support::attach_stopped(config.clone(), db_name, vhost.clone());
    config.broker.url = SecretString::from(format!("amqps://guest:guest@localhost:5671/{vhost}"));
    let dir = tempfile::tempdir().unwrap();
    devca::create_ca(dir.path(), "another CA").unwrap();
    let log = dir.path().join("server.log");
    let env = |ca: &Path| {
        vec![
            ("FEDQ_BROKER__TLS__CA_FILE", ca.display().to_string()),
            ("SSL_CERT_FILE", dev("ca.pem").display().to_string()),
            ("SSL_CERT_DIR", dir.path().join("no-such-dir").display().to_string()),
        ]
    };
    let port = free_port();
    let mut child =
        support::spawn_server_process_with(&config, port, &log, "info", &env(&dir.path().join("ca.pem")));
    let refused = |text: &str| {
        text.lines()
            .find(|l| l.contains("UnknownIssuer") || l.contains("invalid peer certificate"))
            .map(str::to_owned)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let refusal = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = refused(&text) {
            break line;
        }
        assert!(std::time::Instant::now() < deadline, "the broker's certificate was not refused:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let health = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/health")).await.unwrap();
    assert_ne!(health.status(), 200, "the server reported a broker it reached through another CA: {refusal}");
    let _ = child.kill();
    let _ = child.wait();

    let port = free_port();
    let mut child = support::spawn_server_process_with(&config, port, &log, "info", &env(&dev("ca.pem")));
    eventually(60, "the server to reach the broker with its CA", || async {
        let health = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/health")).await.ok()?;
        (health.status() == 200).then_some(())
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    app.cleanup().await;
}
