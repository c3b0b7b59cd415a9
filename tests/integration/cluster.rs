//! Scale-out on one machine: a three-node RabbitMQ cluster (three broker nodes with their own
//! names, ports and data directories) with quorum queues, and two server replicas consuming
//! ingress, each knowing every broker address.
//!
//! Injected: while organization B publishes 300 run messages to A, replica 1 is shut down and
//! broker node 2, the one replica 2 is connected to, is stopped. Asserted: replica 2 moves to
//! another broker node by itself and routes the rest; every message arrives at A (300 distinct
//! ids), the routing log holds each exactly once, none is dead-lettered; a copy forwarded twice,
//! if the broker lost a confirm with its node, carries the same id, so the receiver's replay
//! guard drops it (counted and printed). A real node of a third organization, connected to
//! broker node 2 when it stops, moves to another broker node by itself and runs a job afterwards.

use crate::support;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use fedq::envelope::{self, SealOptions};
use fedq::ids::{RunId, TaskId};
use fedq::protocol::Kind;
use fedq::time::Timestamp;
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use secrecy::SecretString;
use serde_json::{Value, json};
use support::node::{Fed, NodeGuard, PROBE, ensure_images, register_node};
use support::{attach, free_port, job_entry, prepare, route};

const MESSAGES: usize = 300;

fn host() -> String {
    let out = Command::new("hostname").arg("-s").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct BrokerNode {
    name: String,
    amqp: u16,
    management: u16,
}

/// Broker nodes run as the `rabbitmq` user, which shares the Erlang cookie of the machine's
/// broker with `rabbitmqctl`.
struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<BrokerNode>,
}

fn rabbitmqctl(node: &str, args: &[&str]) {
    let out = Command::new("rabbitmqctl").arg("-n").arg(node).args(args).output().expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl -n {node} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Cluster {
    fn start(n: usize) -> Self {
        support::ensure_services();
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("chown").args(["rabbitmq:rabbitmq"]).arg(dir.path()).status().unwrap();
        assert!(status.success());
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        // A configuration of their own: the machine's (/etc/rabbitmq/rabbitmq.conf) binds the
        // TLS port, which the machine's broker holds.
        std::fs::write(dir.path().join("rabbitmq.conf"), "").unwrap();
        let mut nodes = Vec::new();
        for i in 1..=n {
            let node = BrokerNode {
                name: format!("fedq-{tag}-{i}@{}", host()),
                amqp: free_port(),
                management: free_port(),
            };
            let d = dir.path().display();
            let script = format!(
                "cd {d} && env RABBITMQ_NODENAME={name} RABBITMQ_NODE_PORT={amqp} RABBITMQ_DIST_PORT={dist} \
                 RABBITMQ_MNESIA_BASE={d}/mnesia{i} RABBITMQ_LOG_BASE={d}/log{i} RABBITMQ_PID_FILE={d}/pid{i} \
                 RABBITMQ_CONFIG_FILE={d}/rabbitmq.conf \
                 RABBITMQ_SERVER_START_ARGS='-rabbitmq_management listener [{{port,{mgmt}}}] \
                 -rabbitmq_prometheus tcp_config [{{port,{prom}}}]' rabbitmq-server -detached",
                name = node.name,
                amqp = node.amqp,
                dist = free_port(),
                mgmt = node.management,
                prom = free_port(),
            );
            let status =
                Command::new("su").args(["rabbitmq", "-s", "/bin/sh", "-c", &script]).status().unwrap();
            assert!(status.success(), "broker node {i} starts");
            nodes.push(node);
        }
        for node in &nodes {
            // Until the node has registered its name, the CLI cannot reach it at all.
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !Command::new("rabbitmqctl")
                .args(["-n", &node.name, "await_startup", "--timeout", "120"])
                .output()
                .unwrap()
                .status
                .success()
            {
                assert!(std::time::Instant::now() < deadline, "broker node {} did not start", node.name);
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        for node in &nodes[1..] {
            rabbitmqctl(&node.name, &["stop_app"]);
            rabbitmqctl(&node.name, &["join_cluster", &nodes[0].name]);
            rabbitmqctl(&node.name, &["start_app"]);
            rabbitmqctl(&node.name, &["await_startup", "--timeout", "120"]);
        }
        Self { dir, nodes }
    }

    fn address(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].amqp)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            let _ = Command::new("rabbitmqctl").args(["-n", &node.name, "stop"]).output();
        }
        let _ = &self.dir;
    }
}

async fn connect(address: &str, user: &str, password: &str, vhost: &str) -> (Connection, Channel) {
    let url = format!("amqp://{user}:{password}@{address}/{vhost}");
    let connection = Connection::connect(&url, ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    (connection, channel)
}

fn broker_login(registration: &Value) -> (String, String, String) {
    let b = &registration["broker"];
    (
        b["username"].as_str().unwrap().into(),
        b["password"].as_str().unwrap().into(),
        b["queue"].as_str().unwrap().into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_node_and_a_server_replica_stop_during_traffic_and_nothing_is_lost_or_duplicated() {
    let cluster = Cluster::start(3);
    let (config, db_name, _) = prepare().await;
    let vhost = format!("fedq-cluster-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mgmt_url = format!("http://127.0.0.1:{}", cluster.nodes[0].management);
    let management =
        fedq::broker::management::Management::new(&mgmt_url, "guest", SecretString::from("guest"));
    management.create_vhost(&vhost).await.unwrap();
    let all = fedq::broker::management::Permissions {
        configure: ".*".into(),
        write: ".*".into(),
        read: ".*".into(),
    };
    management.set_permissions(&vhost, "guest", &all).await.unwrap();

    // Replica 1 prefers broker node 1, replica 2 node 2; both know all three.
    let replica = |first: usize, others: [usize; 2]| {
        let mut c = config.clone();
        c.broker.url = SecretString::from(format!("amqp://guest:guest@{}/{vhost}", cluster.address(first)));
        c.broker.cluster_hosts = others.iter().map(|i| cluster.address(*i)).collect();
        c.broker.vhost = vhost.clone();
        c.broker.management_url = mgmt_url.clone();
        c
    };
    let one = fedq::server::start(replica(0, [1, 2])).await.expect("replica 1 starts");
    let two = fedq::server::start(replica(1, [2, 0])).await.expect("replica 2 starts");
    let mut app = attach(replica(0, [1, 2]), db_name, vhost.clone(), one.addr).await;
    let replica_two = format!("http://{}", two.addr);

    let a = app.org("a").await;
    let b = app.org("b").await;
    let collaboration = app.collaboration("ab", &[a.org(), b.org()]).await;
    let researcher = app.user(a.org(), "ada", "researcher").await;
    let (a_user, a_password, a_queue) = broker_login(&app.node(a.org(), "a-1").await);
    let (b_user, b_password, _) = broker_login(&app.node(b.org(), "b-1").await);
    // Organization C runs a real node, connected to broker node 2 (which will stop), that knows
    // the other broker nodes and talks to replica 2.
    ensure_images();
    let c = app.org("c").await;
    let ac = app.collaboration("ac", &[a.org(), c.org()]).await;
    let node_dir = tempfile::tempdir().unwrap();
    let (mut node_config, _, registration) =
        register_node(&app, &c, node_dir.path(), Fed::limits(), &["fedq/probe"]).await;
    let (c_user, c_password, _) = broker_login(&registration);
    node_config.broker.url =
        SecretString::from(format!("amqp://{c_user}:{c_password}@{}/{vhost}", cluster.address(1)));
    node_config.broker.cluster_hosts = vec![cluster.address(2), cluster.address(0)];
    node_config.server.url = replica_two.clone();
    let _node_guard = NodeGuard { name: node_config.node.name.clone(), process: None };
    let node = fedq::node::start(node_config).await.expect("C's node starts");

    let (task, run) = (TaskId::new(), RunId::new());
    let r = route(Kind::JobStart, collaboration, task, run);
    let orgs = [a.org(), b.org()];
    let (_, ea, _) = job_entry(&a, a.org(), a.current().public(), &r, b"a", &orgs);
    let (_, eb, _) = job_entry(&a, b.org(), b.current().public(), &r, b"b", &orgs);
    let body =
        json!({"id": task, "run": run, "collaboration": collaboration, "image": "img", "jobs": [ea, eb]});
    let (status, created) = app.call("POST", "/tasks", Some(&researcher), Some(body)).await;
    assert_eq!(status, 201, "{created}");

    // The organizations' clients talk to broker node 3, which stays up.
    let (mut a_conn, mut a_channel) = connect(&cluster.address(2), &a_user, &a_password, &vhost).await;
    let (b_conn, b_channel) = connect(&cluster.address(2), &b_user, &b_password, &vhost).await;
    let message = route(Kind::RunMessage, collaboration, task, run);
    let envelopes: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|i| {
            envelope::seal(
                &b,
                a.org(),
                a.current().public(),
                &message,
                format!("m{i}").as_bytes(),
                &SealOptions::default(),
                Timestamp::now(),
            )
            .unwrap()
            .bytes
        })
        .collect();
    // Clients whose broker node hands a queue to a new leader get a channel error and
    // reconnect, as nodes do; a publish that was not confirmed is sent again (the router drops
    // a copy it has routed).
    let publisher = tokio::spawn({
        let envelopes = envelopes.clone();
        let (address, vhost) = (cluster.address(2), vhost.clone());
        async move {
            let (mut _connection, mut channel) = (b_conn, b_channel);
            for (i, bytes) in envelopes.iter().enumerate() {
                loop {
                    let props =
                        BasicProperties::default().with_delivery_mode(2).with_user_id(b_user.as_str().into());
                    let sent = async {
                        channel
                            .basic_publish(
                                "fedq.ingress".into(),
                                "".into(),
                                BasicPublishOptions::default(),
                                bytes,
                                props,
                            )
                            .await?
                            .await
                    };
                    match sent.await {
                        Ok(confirm) if confirm.is_ack() => break,
                        _ => {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            (_connection, channel) = connect(&address, &b_user, &b_password, &vhost).await;
                        }
                    }
                }
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });

    let mut ids = HashSet::new();
    let mut copies = 0usize;
    let mut stopped = false;
    let sql = app.sql().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while ids.len() < MESSAGES {
        assert!(std::time::Instant::now() < deadline, "only {} of {MESSAGES} messages arrived", ids.len());
        match a_channel.basic_get(a_queue.as_str().into(), BasicGetOptions { no_ack: true }).await {
            Ok(Some(got)) => {
                copies += 1;
                ids.insert(got.delivery.properties.message_id().as_ref().unwrap().to_string());
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                (a_conn, a_channel) = connect(&cluster.address(2), &a_user, &a_password, &vhost).await;
            }
        }
        if !stopped && ids.len() >= MESSAGES / 3 {
            // A third through: replica 1 goes away, and so does broker node 2, the one replica 2
            // is connected to: replica 2 must move to another broker node by itself.
            rabbitmqctl(&cluster.nodes[1].name, &["stop"]);
            app.stop().await;
            stopped = true;
        }
    }
    publisher.await.unwrap();
    drop(a_conn);
    assert!(stopped, "the faults were injected during the traffic");

    // C's node lost its broker node with the rest; it moved to another and runs a job.
    // The researcher trusts C's key by its fingerprint.
    let trust = fedq::keys::KeyTrust::in_memory(fedq::keys::FirstUse::Refuse);
    trust.trust(c.org(), c.current().id()).unwrap();
    let client = fedq::client::Client::with_token(
        &replica_two,
        &Default::default(),
        SecretString::from(researcher.clone()),
    )
    .unwrap()
    .with_trust(std::sync::Arc::new(trust));
    let spec = fedq::client::TaskSpec {
        collaboration: ac,
        image: PROBE.into(),
        organizations: vec![c.org()],
        inputs: fedq::client::Inputs::Same(b"[]".to_vec()),
        name: "after the failover".into(),
        return_log: false,
    };
    let created = client.create_task(&a, &spec).await.expect("replica 2 takes the task");
    let results = client
        .wait_and_open(&a, ac, created.task, Duration::from_secs(120))
        .await
        .expect("C's result arrives");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].status, fedq::protocol::JobStatus::Completed, "{:?}", results[0].reason);
    node.shutdown().await;
    assert_eq!(ids.len(), MESSAGES, "every message arrived");
    let logged: i64 = sql
        .query_one("SELECT count(*) FROM routing_log WHERE kind = 'run_message'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, MESSAGES as i64, "each message routed exactly once");
    let dead: i64 = sql.query_one("SELECT count(*) FROM dead_letters", &[]).await.unwrap().get(0);
    assert_eq!(dead, 0);
    let health = reqwest::get(format!("{replica_two}/api/v1/health")).await.unwrap();
    assert_eq!(health.status(), 200, "replica 2 still serves");
    eprintln!(
        "{copies} deliveries for {MESSAGES} messages: {} duplicate copies for the replay guard",
        copies - MESSAGES
    );
    two.shutdown().await;
    app.cleanup().await;
    drop(cluster);
}
