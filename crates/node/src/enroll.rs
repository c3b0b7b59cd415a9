//! The settings an enrollment writes: a complete node.toml made from the server's answer to
//! `POST /enroll` and what the administrator said on the command line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::contract::NodeRegistration;

use crate::ids::OrgId;

/// An image the node will run, pinned to the local image's id.
#[derive(Debug, Clone)]
pub struct PinnedImage {
    /// Repository name (`fedq/secure-sum`).
    pub name: String,
    /// The local image's id (`sha256:…`).
    pub id: String,
}

/// What goes into node.toml besides the server's answer.
#[derive(Debug, Clone, Default)]
pub struct Choices {
    /// The server's URL.
    pub server_url: String,
    /// The CA that signs the server's certificate; none for the system's roots.
    pub server_ca_file: Option<PathBuf>,
    /// The CA that signs the broker's certificate.
    pub broker_ca_file: Option<PathBuf>,
    /// The organization's private key file.
    pub key_file: PathBuf,
    /// Where the node keeps its state.
    pub state_dir: PathBuf,
    /// Data sources: label and host path.
    pub data: BTreeMap<String, PathBuf>,
    /// Images allowed, each granted every data source.
    pub images: Vec<PinnedImage>,
    /// Organizations whose tasks may run here (ids).
    pub requesters: Vec<OrgId>,
    /// Key fingerprints per organization, compared out of band.
    pub pins: BTreeMap<OrgId, Vec<String>>,
    /// The server's transparency-log key (hex), pinned at enrollment.
    pub log_key: Option<String>,
}

/// Why an enrollment answer cannot be made into settings.
#[derive(Debug, thiserror::Error)]
#[error("the server's enrollment answer has no usable {0}; is the server a fedq server of this version?")]
pub struct AnswerError(&'static str);

/// A TOML basic string (JSON's string escapes are a subset of TOML's).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string encodes")
}

fn quoted_path(path: &Path) -> String {
    quoted(&path.display().to_string())
}

/// The AMQP URL of the answer with the node's credentials and virtual host spliced in: what
/// `[broker] url` needs.
pub fn broker_url(answer: &NodeRegistration) -> Result<String, AnswerError> {
    let broker = &answer.broker;
    let mut url = url::Url::parse(&broker.url).map_err(|_| AnswerError("broker.url"))?;
    url.set_username(&broker.username).map_err(|()| AnswerError("broker.url"))?;
    url.set_password(Some(broker.password.expose())).map_err(|()| AnswerError("broker.url"))?;
    url.set_path("");
    url.path_segments_mut().map_err(|()| AnswerError("broker.url"))?.clear().push(&broker.vhost);
    Ok(url.to_string())
}

/// node.toml for the node the server registered in `answer`, mode 0600 when written (it holds
/// the API key and the broker password).
pub fn render(answer: &NodeRegistration, choices: &Choices) -> Result<String, AnswerError> {
    let name = &answer.node.name;
    let organization = answer.organization.as_ref().ok_or(AnswerError("organization"))?;
    let org = organization.id;
    let org_name = &organization.name;
    let api_key = answer.api_key.expose();
    let username = &answer.broker.username;
    let server_user = &answer.broker.server_user;
    let broker_url = broker_url(answer)?;
    let mut out = String::new();
    let w = &mut out;
    let _ =
        writeln!(w, "# fedq node settings, written by `fedq node enroll` for node {name:?} of {org_name:?}.");
    let _ = writeln!(
        w,
        "# Holds this node's API key and broker password: keep it mode 0600. Reference: docs/settings.md."
    );
    let _ = writeln!(w, "\n[node]\nname = {}\norganization = {}", quoted(name), quoted(&org.to_string()));
    let _ = writeln!(
        w,
        "key_file = {}\nstate_dir = {}",
        quoted_path(&choices.key_file),
        quoted_path(&choices.state_dir)
    );
    let _ = writeln!(w, "\n[server]\nurl = {}\napi_key = {}", quoted(&choices.server_url), quoted(api_key));
    if let Some(ca) = &choices.server_ca_file {
        let _ = writeln!(w, "\n[server.tls]\nca_file = {}", quoted_path(ca));
    }
    let _ = writeln!(w, "\n[broker]\nurl = {}\nusername = {}", quoted(&broker_url), quoted(username));
    let _ = writeln!(
        w,
        "# Control messages are accepted from this broker user only.\nserver_user = {}",
        quoted(server_user)
    );
    if let Some(ca) = &choices.broker_ca_file {
        let _ = writeln!(w, "\n[broker.tls]\nca_file = {}", quoted_path(ca));
    }
    let _ = writeln!(w, "\n[policy]");
    let _ = writeln!(
        w,
        "# Organizations whose tasks may run here, by id: the partners this organization agreed to work with."
    );
    let requesters: Vec<String> = choices.requesters.iter().map(|o| quoted(&o.to_string())).collect();
    let _ = writeln!(w, "requesters = [{}]", requesters.join(", "));
    let _ = writeln!(w, "share_logs = false");
    let _ =
        writeln!(w, "# Another organization's task must list at least this many organizations to run here.");
    let _ = writeln!(w, "min_organizations = {}", crate::config::DEFAULT_MIN_ORGANIZATIONS);
    let _ = writeln!(w, "# The fewest of this node's rows an analysis's count may rest on (a table's cell).");
    let _ = writeln!(w, "min_cell_count = {}", crate::config::DEFAULT_MIN_CELL_COUNT);
    let labels: Vec<String> = choices.data.keys().map(|l| quoted(l)).collect();
    for image in &choices.images {
        let _ =
            writeln!(w, "\n# Pinned to the image this machine has; a rebuilt image must be pinned again.");
        let _ =
            writeln!(w, "[[policy.images]]\nname = {}\ndigest = {}", quoted(&image.name), quoted(&image.id));
        let _ = writeln!(w, "data = [{}]", labels.join(", "));
    }
    let _ = writeln!(
        w,
        "\n[data]\n# label = host path, mounted read-only at /data/<label> for the images granted it"
    );
    for (label, path) in &choices.data {
        let _ = writeln!(w, "{} = {}", quoted(label), quoted_path(path));
    }
    let _ = writeln!(
        w,
        "\n[peers]\n# Partners' keys are used only when trusted: pinned below (fingerprints compared out of band),"
    );
    let _ = writeln!(
        w,
        "# or reached from a pinned key by a rotation the partner signed.\ntrust_on_first_use = false"
    );
    let _ = writeln!(w, "\n[peers.pins]");
    for (org, fingerprints) in &choices.pins {
        let list: Vec<String> = fingerprints.iter().map(|f| quoted(f)).collect();
        let _ = writeln!(w, "{} = [{}]", quoted(&org.to_string()), list.join(", "));
    }
    let _ = writeln!(
        w,
        "\n[transparency]\n# The server's transparency log, checked by this node (docs/protocol.md). Compare the\n\
         # key with your partners': every member must see the same one."
    );
    if let Some(key) = &choices.log_key {
        let _ = writeln!(w, "log_key = {}", quoted(key));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;

    fn answer() -> NodeRegistration {
        serde_json::from_value(serde_json::json!({
            "node": {"id": "0c4c3cf4-8a39-4b52-9c0e-6f5a4d5a3a11", "organization": "6d1f2a52-5f0e-4f7e-9a43-5b3c1a0e8d21",
                     "name": "registry-a-1", "broker_user": "fedq-node-1", "online": false},
            "organization": {"id": "6d1f2a52-5f0e-4f7e-9a43-5b3c1a0e8d21", "name": "Registry \"A\""},
            "api_key": "fedq_n_secret",
            "broker": {"url": "amqps://broker.fedq.test:5671", "vhost": "fedq/prod", "username": "fedq-node-1",
                       "password": "p@ss:word", "queue": "fedq.org.6d1f2a52-5f0e-4f7e-9a43-5b3c1a0e8d21",
                       "exchange": "fedq.ingress", "server_user": "fedq-server"},
        }))
        .expect("a registration as the server answers it")
    }

    #[test]
    fn the_broker_url_carries_the_credentials_and_the_virtual_host_encoded() {
        assert_eq!(
            broker_url(&answer()).unwrap(),
            "amqps://fedq-node-1:p%40ss%3Aword@broker.fedq.test:5671/fedq%2Fprod"
        );
        let uri = url::Url::parse(&broker_url(&answer()).unwrap()).unwrap();
        let decoded =
            |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().unwrap().1.into_owned();
        assert_eq!(
            (decoded(uri.password().unwrap()), decoded(uri.path().trim_start_matches('/'))),
            ("p@ss:word".to_owned(), "fedq/prod".to_owned())
        );
    }

    #[test]
    fn the_settings_written_load_as_they_are() {
        let org: OrgId = "6d1f2a52-5f0e-4f7e-9a43-5b3c1a0e8d21".parse().unwrap();
        let choices = Choices {
            server_url: "https://fedq.test".into(),
            server_ca_file: Some("/etc/fedq/ca.pem".into()),
            broker_ca_file: Some("/etc/fedq/broker-ca.pem".into()),
            key_file: "/etc/fedq/org.key".into(),
            state_dir: "/var/lib/fedq".into(),
            data: BTreeMap::from([("patients".to_owned(), PathBuf::from("/srv/patients.csv"))]),
            images: vec![PinnedImage { name: "fedq/secure-sum".into(), id: "sha256:ab12".into() }],
            requesters: vec![org],
            pins: BTreeMap::from([(org, vec!["SHA256:00ff".to_owned()])]),
            log_key: Some("ab".repeat(32)),
        };
        let text = render(&answer(), &choices).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, &text).unwrap();
        let config = NodeConfig::load(Some(&path)).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.node.name, "registry-a-1");
        assert_eq!(config.node.organization, org);
        assert_eq!(config.policy.images[0].data, vec!["patients".to_owned()]);
        assert_eq!(config.peers.pins[&org], vec!["SHA256:00ff".to_owned()]);
        assert_eq!(config.broker.username, "fedq-node-1");
        assert_eq!(config.transparency.log_key, Some("ab".repeat(32)));
    }
}
