//! A federation of several organizations, each with its own node (in-process, real Docker), a
//! researcher at the first, and the client the command line uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fedq::client::Client;
use fedq::ids::CollaborationId;
use fedq::keys::{FirstUse, Identity, KeyTrust};
use fedq::node::RunningNode;
use fedq::node::config::{NodeConfig, PeersSection};
use secrecy::SecretString;

use super::node::{Fed, NodeGuard, ensure_images, register_node};
use super::{TestApp, spawn_app};

pub struct Federation {
    pub app: TestApp,
    pub orgs: Vec<Identity>,
    pub collaboration: CollaborationId,
    pub researcher: Client,
    pub nodes: Vec<RunningNode>,
    pub configs: Vec<NodeConfig>,
    pub dirs: Vec<tempfile::TempDir>,
    guards: Vec<NodeGuard>,
}

impl Federation {
    /// `n` organizations in one collaboration, each with a node allowed to run `images`, whose
    /// data sources `data` writes (given the organization's index and a directory).
    pub async fn new(
        n: usize,
        images: &[&str],
        data: impl Fn(usize, &Path) -> BTreeMap<String, PathBuf>,
    ) -> Self {
        Self::configured(n, images, data, |_, _| {}).await
    }

    /// [`Federation::new`], with each node's settings changed by `configure` (given the
    /// organization's index) before it starts.
    pub async fn configured(
        n: usize,
        images: &[&str],
        data: impl Fn(usize, &Path) -> BTreeMap<String, PathBuf>,
        configure: impl Fn(usize, &mut NodeConfig),
    ) -> Self {
        ensure_images();
        let app = spawn_app().await;
        let mut orgs = Vec::with_capacity(n);
        for i in 0..n {
            orgs.push(app.org(&format!("registry-{i}")).await);
        }
        let ids: Vec<_> = orgs.iter().map(Identity::org).collect();
        let collaboration = app.collaboration("registries", &ids).await;
        let token = app.user(orgs[0].org(), "ada", "researcher").await;
        // Every party trusts every organization's key by fingerprint, as after comparing them
        // out of band.
        let pins: BTreeMap<_, _> =
            orgs.iter().map(|o| (o.org(), vec![o.current().id().to_string()])).collect();
        let trust = KeyTrust::in_memory(FirstUse::Refuse);
        for org in &orgs {
            trust.trust(org.org(), org.current().id()).unwrap();
        }
        let researcher = Client::with_token(
            &format!("http://{}", app.addr),
            &Default::default(),
            SecretString::from(token),
        )
        .unwrap()
        .with_trust(std::sync::Arc::new(trust));
        let (mut nodes, mut configs, mut dirs, mut guards) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, org) in orgs.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let (mut config, _, _) = register_node(&app, org, dir.path(), Fed::limits(), images).await;
            config.data = data(i, dir.path());
            // Each image the policy allows is granted every data source of the node.
            for rule in &mut config.policy.images {
                rule.data = config.data.keys().cloned().collect();
            }
            // Keys fetched again after a second, so that tests see rotations followed at once.
            config.peers = PeersSection {
                pins: pins.clone(),
                trust_on_first_use: false,
                refresh_secs: 1,
                ..PeersSection::default()
            };
            // The transparency log checked every second, so that a test sees the monitors'
            // verdict on its run at once.
            config.transparency.check_secs = 1;
            configure(i, &mut config);
            guards.push(NodeGuard { name: config.node.name.clone(), process: None });
            nodes.push(fedq::node::start(config.clone()).await.expect("the node starts"));
            configs.push(config);
            dirs.push(dir);
        }
        Self { app, orgs, collaboration, researcher, nodes, configs, dirs, guards }
    }

    /// Container logs the nodes kept, all of them.
    pub fn node_logs(&self) -> String {
        let mut all = String::new();
        for config in &self.configs {
            let jobs = config.node.state_dir.join("jobs");
            for entry in std::fs::read_dir(jobs).into_iter().flatten().flatten() {
                if let Ok(log) = std::fs::read_to_string(entry.path().join("container.log")) {
                    all.push_str(&log);
                }
            }
        }
        all
    }

    /// Runs a task of `image` at every organization, in order, with the same `input`, as the
    /// first organization's researcher; the task and every result, opened, within `timeout`.
    pub async fn run_task(
        &self,
        image: &str,
        input: &[u8],
        name: &str,
        timeout: std::time::Duration,
    ) -> (fedq::client::CreatedTask, Vec<fedq::client::OpenedResult>) {
        let spec = fedq::client::TaskSpec {
            collaboration: self.collaboration,
            image: image.into(),
            organizations: self.orgs.iter().map(|o| o.org()).collect(),
            inputs: fedq::client::Inputs::Same(input.to_vec()),
            name: name.into(),
            return_log: false,
        };
        let created = self.researcher.create_task(&self.orgs[0], &spec).await.unwrap();
        let opened = self
            .researcher
            .wait_and_open(&self.orgs[0], self.collaboration, created.task, timeout)
            .await
            .unwrap();
        (created, opened)
    }

    /// Waits until every node's monitor has checked the log up to the newest signed head, and
    /// asserts that none raised an alarm: what an honest server's run must give.
    pub async fn assert_log_checked_without_alarms(&self) {
        let sql = self.app.sql().await;
        let newest: i64 =
            sql.query_one("SELECT coalesce(max(size), 0) FROM transparency_heads", &[]).await.unwrap().get(0);
        for (node, config) in self.nodes.iter().zip(&self.configs) {
            let report = super::eventually(30, "every node's monitor at the newest head", || async {
                let report = node.log_report();
                (report.size.unwrap_or(0) >= newest as u64).then_some(report)
            })
            .await;
            assert_eq!(
                report.alarms,
                Vec::<String>::new(),
                "node {}: an honest run raises no alarm",
                config.node.name
            );
        }
    }

    pub async fn cleanup(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
        drop(self.guards);
        self.app.cleanup().await;
    }
}
