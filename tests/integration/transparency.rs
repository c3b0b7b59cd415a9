//! The transparency log kept by a real server on real PostgreSQL and RabbitMQ: every routed
//! envelope and every trust event gets exactly one leaf, the signed heads verify with the log's
//! key, inclusion and consistency proofs served by the API verify with RFC 9162's algorithms,
//! and the whole tree recomputed from the entries gives the signed root.

use ed25519_dalek::VerifyingKey;
use fedq::envelope;
use fedq::transparency::{
    EnvelopeLeaf, Event, Leaf, MerkleTree, SignedTreeHead, leaf_hash, verify_consistency, verify_inclusion,
    wire,
};
use serde_json::Value;

use crate::support::{TestApp, TwoOrgRun, eventually, spawn_app};

/// The log as a member reads it, through the REST API.
struct LogReader<'a> {
    app: &'a TestApp,
    token: String,
    key: VerifyingKey,
}

impl<'a> LogReader<'a> {
    async fn new(app: &'a TestApp, token: &str) -> Self {
        let (status, body) = app.call("GET", "/transparency/key", Some(token), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["algorithm"], "Ed25519");
        let bytes: [u8; 32] = hex::decode(body["public_key"].as_str().unwrap()).unwrap().try_into().unwrap();
        Self { app, token: token.to_owned(), key: VerifyingKey::from_bytes(&bytes).unwrap() }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.app.call("GET", path, Some(&self.token), None).await
    }

    /// The newest head, its signature checked.
    async fn head(&self) -> SignedTreeHead {
        let (status, body) = self.get("/transparency/tree-head").await;
        assert_eq!(status, 200, "{body}");
        let body: fedq::contract::TreeHeadBody = serde_json::from_value(body).unwrap();
        let head = SignedTreeHead::try_from(&body).unwrap();
        head.verify(&self.key).expect("the head is signed by the log's key");
        head
    }

    /// A head of at least `size` leaves.
    async fn head_of_at_least(&self, size: u64) -> SignedTreeHead {
        eventually(30, &format!("a signed head of at least {size} leaves"), || async {
            let head = self.head().await;
            (head.head.size >= size).then_some(head)
        })
        .await
    }

    /// Proves `leaf` is in the tree of `head`, or says why not.
    async fn prove(&self, leaf: &Leaf, head: &SignedTreeHead) -> Result<u64, String> {
        let hash = leaf.hash();
        let (status, body) = self
            .get(&format!(
                "/transparency/proof/inclusion?leaf_hash={}&size={}",
                hex::encode(hash),
                head.head.size
            ))
            .await;
        if status != 200 {
            return Err(format!("{status} {body}"));
        }
        let proof: fedq::contract::InclusionProofBody = serde_json::from_value(body).unwrap();
        let path = wire::inclusion_path(&proof).unwrap();
        verify_inclusion(&hash, proof.leaf_index, head.head.size, &path, &head.head.root)
            .map_err(|e| format!("the proof does not verify: {e}"))?;
        Ok(proof.leaf_index)
    }

    /// Every leaf of the tree of `head`, in order (each one shown).
    async fn entries(&self, head: &SignedTreeHead) -> Vec<Vec<u8>> {
        let seen = self.entries_as_seen(head).await;
        seen.into_iter().map(|(leaf, _)| leaf.expect("every leaf is shown to this reader")).collect()
    }

    /// Every entry of the tree of `head`, in order: the leaf where shown, and its hash.
    async fn entries_as_seen(&self, head: &SignedTreeHead) -> Vec<(Option<Vec<u8>>, [u8; 32])> {
        let mut entries = Vec::new();
        while (entries.len() as u64) < head.head.size {
            let (status, body) = self
                .get(&format!("/transparency/entries?start={}&end={}", entries.len(), head.head.size))
                .await;
            assert_eq!(status, 200, "{body}");
            let page = body.as_array().unwrap();
            assert!(!page.is_empty(), "entries end before the head's size");
            for entry in page {
                assert_eq!(entry["index"].as_u64().unwrap(), entries.len() as u64);
                match entry["leaf"].as_str() {
                    Some(leaf) => {
                        assert!(entry.get("leaf_hash").is_none(), "{entry}");
                        let leaf = hex::decode(leaf).unwrap();
                        let hash = leaf_hash(&leaf);
                        entries.push((Some(leaf), hash));
                    }
                    None => entries
                        .push((None, wire::hash_from_hex(entry["leaf_hash"].as_str().unwrap()).unwrap())),
                }
            }
        }
        entries
    }
}

fn envelope_leaf(bytes: &[u8]) -> Leaf {
    let parsed = envelope::parse(bytes, usize::MAX).unwrap();
    Leaf::Envelope(EnvelopeLeaf::of(&parsed.header, bytes))
}

// Multi-threaded: it runs `fedq audit` as a process against the server in this one.
#[tokio::test(flavor = "multi_thread")]
async fn every_routed_envelope_and_trust_event_is_in_the_log_and_every_proof_verifies() {
    let app = spawn_app().await;
    let run = TwoOrgRun::start(&app).await;
    let log = LogReader::new(&app, &run.researcher).await;
    let first = log.head_of_at_least(1).await;

    // B sends A run messages; A's node receives what B published.
    let mut sent = Vec::new();
    for i in 0..20u8 {
        let bytes = run.b_to_a(&[i; 40]);
        run.node_b.publish(&bytes).await.unwrap();
        sent.push(bytes);
    }
    let mut received = Vec::new();
    for _ in &sent {
        received.push(run.node_a.next(20).await.data);
    }
    // The router routes concurrently: the order may differ, the envelopes may not.
    received.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(received, expected);

    // Each envelope is in the log, proven against a signed head by the RFC 9162 verifier.
    let (routed, _) = app.routed_results(&[run.task]).await;
    let head = log.head_of_at_least(first.head.size + 20).await;
    let mut indexes = Vec::new();
    for bytes in &sent {
        let leaf = envelope_leaf(bytes);
        let index = eventually(30, "the envelope's leaf in a signed head", || async {
            log.prove(&leaf, &log.head().await).await.ok()
        })
        .await;
        indexes.push(index);
    }
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), sent.len(), "one leaf per envelope");
    // An envelope that was never routed has no leaf.
    let never = envelope_leaf(&run.b_to_a(b"never sent"));
    let refused = log.prove(&never, &head).await.unwrap_err();
    assert!(refused.starts_with("404"), "{refused}");

    // The later tree extends the earlier one: the server's consistency proof verifies.
    let last = log.head().await;
    let (status, body) = log
        .get(&format!("/transparency/proof/consistency?from={}&to={}", first.head.size, last.head.size))
        .await;
    assert_eq!(status, 200, "{body}");
    let proof: fedq::contract::ConsistencyProofBody = serde_json::from_value(body).unwrap();
    verify_consistency(
        first.head.size,
        last.head.size,
        &wire::consistency_path(&proof).unwrap(),
        &first.head.root,
        &last.head.root,
    )
    .expect("the log only grew");

    // From scratch: the entries recompute the signed root, each leaf parses, and they are
    // exactly the routed envelopes (each once) and the trust events of the set-up.
    let leaves = log.entries(&last).await;
    let tree = MerkleTree::from_leaf_hashes(leaves.iter().map(|l| leaf_hash(l)));
    assert_eq!(tree.root(), last.head.root, "the entries give the signed root");
    let leaves: Vec<Leaf> = leaves.iter().map(|l| Leaf::decode(l).expect("every leaf parses")).collect();
    let mut ids: Vec<_> = leaves
        .iter()
        .filter_map(|l| match l {
            Leaf::Envelope(e) => Some(e.id),
            Leaf::Event(_) => None,
        })
        .collect();
    let envelopes = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), envelopes, "no envelope logged twice");
    let in_log =
        app.sql().await.query_one("SELECT count(*) FROM routing_log", &[]).await.unwrap().get::<_, i64>(0);
    assert_eq!(envelopes as i64, in_log, "one leaf per routing-log row (task {routed} routed)");

    let events_of = |org| {
        leaves
            .iter()
            .filter_map(|l| match l {
                Leaf::Event(e) if e.organization == org => Some(e.event),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let a = events_of(run.a.org());
    assert!(a.contains(&Event::KeyPublished { key: *run.a.current().public().id().as_bytes() }), "{a:?}");
    assert!(a.contains(&Event::CollaborationCreated { collaboration: run.collaboration }), "{a:?}");
    let node_a: fedq::ids::NodeId = serde_json::from_value(run.reg_a["node"]["id"].clone()).unwrap();
    assert!(a.contains(&Event::NodeRegistered { node: node_a }), "{a:?}");
    assert!(
        a.iter().any(|e| matches!(e, Event::UserRoleChanged { role: 1, .. })),
        "ada, a researcher: {a:?}"
    );
    let b = events_of(run.b.org());
    assert!(b.contains(&Event::KeyPublished { key: *run.b.current().public().id().as_bytes() }), "{b:?}");
    assert!(
        !b.iter().any(|e| matches!(e, Event::UserRoleChanged { role: 1, .. })),
        "no researcher at B: {b:?}"
    );

    // Revoking A's node and removing B from the collaboration are logged as they happen.
    let root = app.root_token.clone();
    let (status, body) = app.call("DELETE", &format!("/nodes/{node_a}"), Some(&root), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .call(
            "DELETE",
            &format!("/collaborations/{}/organizations/{}", run.collaboration, run.b.org()),
            Some(&root),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let newest = log.head_of_at_least(last.head.size + 2).await;
    let more: Vec<Event> = log.entries(&newest).await[last.head.size as usize..]
        .iter()
        .filter_map(|l| match Leaf::decode(l).unwrap() {
            Leaf::Event(e) => Some(e.event),
            Leaf::Envelope(_) => None,
        })
        .collect();
    assert!(more.contains(&Event::NodeRevoked { node: node_a }), "{more:?}");
    assert!(more.contains(&Event::MemberRemoved { collaboration: run.collaboration }), "{more:?}");

    // An organization outside the collaboration reads no envelope's header, only its hash, and
    // still recomputes the signed root; the trust events stay readable for every monitor.
    let c = app.org("c").await;
    let outsider = app.user(c.org(), "carol", "researcher").await;
    let seen = LogReader::new(&app, &outsider).await.entries_as_seen(&newest).await;
    let tree = MerkleTree::from_leaf_hashes(seen.iter().map(|(_, hash)| *hash));
    assert_eq!(tree.root(), newest.head.root, "the hashes give the signed root");
    let shown: Vec<Leaf> =
        seen.iter().filter_map(|(leaf, _)| Some(Leaf::decode(leaf.as_ref()?).unwrap())).collect();
    assert!(
        shown.iter().all(|l| matches!(l, Leaf::Event(_))),
        "no envelope of another collaboration is shown"
    );
    assert_eq!(seen.len() - shown.len(), envelopes, "each envelope is there as a hash");
    assert!(shown.iter().any(|l| matches!(l, Leaf::Event(e) if e.organization == run.a.org())));
    // The client's replay takes the hashes as they are: `fedq audit verify` works for C too.
    let (code, out, err) = {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let server = format!("http://{}", app.addr);
        crate::support::fedq_ok(
            h,
            &["login", "--server", &server, "--user", "carol", "--password-stdin"],
            Some("a-long-password-123\n"),
        );
        crate::support::fedq_status(h, &["audit", "verify"], None)
    };
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("they give the signed root"), "{out}");
    app.cleanup().await;
}

/// A federation whose node at B checks the log every second and wants envelopes logged within
/// three seconds; returns it once the monitor has checked a head with no alarm.
async fn monitored() -> crate::support::node::Fed {
    let mut fed = crate::support::node::Fed::new(crate::support::node::Fed::limits()).await;
    fed.config.transparency.check_secs = 1;
    fed.config.transparency.inclusion_delay_secs = 3;
    fed.start_node().await;
    let node = fed.node.as_ref().unwrap();
    let report = eventually(30, "the monitor's first check", || async {
        let report = node.log_report();
        report.size.is_some().then_some(report)
    })
    .await;
    assert_eq!(report.alarms, Vec::<String>::new(), "an honest log raises no alarm");
    fed
}

/// The alarm of B's monitor that contains `what`, once raised.
async fn alarm(fed: &crate::support::node::Fed, what: &str) -> String {
    let node = fed.node.as_ref().unwrap();
    eventually(30, &format!("an alarm about {what}"), || async {
        node.log_report().alarms.into_iter().find(|a| a.contains(what))
    })
    .await
}

/// The server publishes a key for B that B's administrator never published (root, or anyone
/// with the database): to keep the log honest it must log it, and B's node sees a key for its
/// organization that is not its key file.
#[tokio::test]
async fn a_key_published_for_an_organization_without_it_is_caught_by_its_node() {
    let fed = monitored().await;
    let forged = fedq::keys::OrgKey::generate();
    let sql = fed.app.sql().await;
    sql.execute(
        "INSERT INTO organization_keys (org_id, key_id, public_key) VALUES ($1, $2, $3)",
        &[fed.b.org().as_uuid(), &forged.id().as_bytes().as_slice(), &forged.public().to_string()],
    )
    .await
    .unwrap();
    let leaf = Leaf::Event(fedq::transparency::EventLeaf {
        organization: fed.b.org(),
        at: fedq::time::Timestamp::now(),
        event: Event::KeyPublished { key: *forged.id().as_bytes() },
    });
    sql.execute("INSERT INTO transparency_pending (leaf) VALUES ($1)", &[&leaf.encode()]).await.unwrap();
    let alarm = alarm(&fed, "was published for this organization").await;
    assert!(alarm.contains(&hex::encode(forged.id().as_bytes())), "{alarm}");
    // The node's heartbeat carries it to the dashboard: the node's row and the overview's card.
    let mut dash = crate::support::dashboard::Dash::new(&fed.app);
    dash.login("root", crate::support::ROOT_PASSWORD).await;
    let page = eventually(30, "the alarm on the dashboard", || async {
        let (_, _, page) = dash.get("/admin/organizations").await;
        page.contains("was published for this organization").then_some(page)
    })
    .await;
    assert!(page.contains("badge s-alarm"), "the node's row is marked");
    let (_, _, overview) = dash.get("/admin").await;
    let card = overview.split("id=\"transparency\"").nth(1).expect("the overview has the log's card");
    assert!(card.contains("1 node(s) reporting an alarm"), "{}", &card[..card.len().min(400)]);
    fed.cleanup().await;
}

/// The server routes an envelope to B without logging it (a trigger drops every envelope's
/// leaf, as a server whose logging was switched off would): B's monitor does not find the
/// envelope it was delivered and says so.
#[tokio::test]
async fn an_envelope_delivered_but_left_out_of_the_log_is_caught_by_its_receiver() {
    let fed = monitored().await;
    fed.app
        .sql()
        .await
        .batch_execute(
            "CREATE FUNCTION drop_envelope_leaves() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF get_byte(NEW.leaf, 1) = 1 THEN RETURN NULL; END IF; RETURN NEW; END $$;
             CREATE TRIGGER drop_envelope_leaves BEFORE INSERT ON transparency_pending
             FOR EACH ROW EXECUTE FUNCTION drop_envelope_leaves();",
        )
        .await
        .unwrap();
    let submitted = fed.submit(serde_json::json!([])).await;
    fed.result(submitted.task).await;
    let received = alarm(&fed, "was delivered to this node but is not in the log").await;
    assert!(received.contains("job_start"), "{received}");
    // What B sent (its status and result) is missing too, and B says so.
    let sent = alarm(&fed, "was sent by this node").await;
    assert!(sent.contains("job_result") || sent.contains("job_status"), "{sent}");
    fed.cleanup().await;
}

/// The server rewrites a leaf B's monitor already checked, and signs a head over the rewritten
/// history with its real key: the entries no longer give the root from what B checked.
#[tokio::test]
async fn a_rewritten_history_is_caught_even_when_the_log_signs_it() {
    let fed = monitored().await;
    let sql = fed.app.sql().await;
    let rows = sql.query("SELECT leaf FROM transparency_leaves ORDER BY idx", &[]).await.unwrap();
    let mut leaves: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
    let checked = fed.node.as_ref().unwrap().log_report().size.unwrap();
    assert!(checked >= 1 && checked as usize <= leaves.len());
    // Leaf 0 (B's... or A's first key) now says another key; one leaf is appended so that the
    // forged head is the newest.
    let forged = Leaf::Event(fedq::transparency::EventLeaf {
        organization: fed.b.org(),
        at: fedq::time::Timestamp::now(),
        event: Event::KeyPublished { key: *fed.b.current().id().as_bytes() },
    })
    .encode();
    leaves[0] = forged.clone();
    leaves.push(forged.clone());
    sql.execute(
        "UPDATE transparency_leaves SET leaf = $1, leaf_hash = $2 WHERE idx = 0",
        &[&forged, &leaf_hash(&forged).as_slice()],
    )
    .await
    .unwrap();
    let size = leaves.len() as i64;
    sql.execute(
        "INSERT INTO transparency_leaves (idx, leaf, leaf_hash) VALUES ($1, $2, $3)",
        &[&(size - 1), &forged, &leaf_hash(&forged).as_slice()],
    )
    .await
    .unwrap();
    let key = fedq::keys::SeedFile { header: "", prefix: "fedq-log1:" }
        .load(&crate::support::log_key_file(&fed.app.db_name))
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&key);
    let tree = MerkleTree::from_leaf_hashes(leaves.iter().map(|l| leaf_hash(l)));
    let head = fedq::transparency::TreeHead {
        size: size as u64,
        root: tree.root(),
        timestamp_ms: fedq::time::Timestamp::now().as_millis() as u64,
    }
    .sign(&key);
    sql.execute(
        "INSERT INTO transparency_heads (size, root, timestamp_ms, signature) VALUES ($1, $2, $3, $4)",
        &[&size, &head.head.root.as_slice(), &(head.head.timestamp_ms as i64), &head.signature.as_slice()],
    )
    .await
    .unwrap();
    alarm(&fed, "do not give the root it signed").await;
    fed.cleanup().await;
}

/// `fedq audit` as a member runs it: the log verified from scratch and from a checkpoint, an
/// organization's own view, envelopes proven in (and one proven absent), and a rewritten leaf or
/// a swapped log key refused with exit status 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedq_audit_verifies_the_log_proves_envelopes_and_catches_a_rewrite() {
    use crate::support::{fedq_ok, fedq_status};
    let app = spawn_app().await;
    let run = TwoOrgRun::start(&app).await;
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let server = format!("http://{}", app.addr);
    fedq_ok(
        home,
        &["login", "--server", &server, "--user", "ada", "--password-stdin"],
        Some("a-long-password-123\n"),
    );

    let sent = run.b_to_a(b"logged");
    run.node_b.publish(&sent).await.unwrap();
    assert_eq!(run.node_a.next(20).await.data, sent);
    std::fs::write(home.join("sent.env"), &sent).unwrap();
    std::fs::write(home.join("never.env"), run.b_to_a(b"never sent")).unwrap();
    let proved = eventually(30, "the envelope proven in the log", || async {
        let (code, out, _) =
            fedq_status(home, &["audit", "prove", home.join("sent.env").to_str().unwrap()], None);
        (code == Some(0)).then_some(out)
    })
    .await;
    assert!(proved.contains("in the log, leaf"), "{proved}");
    let (code, _, err) =
        fedq_status(home, &["audit", "prove", home.join("never.env").to_str().unwrap()], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not in the log"), "{err}");

    // From scratch, with A's own view, and a checkpoint.
    let checkpoint = home.join("checkpoint.json");
    let out = fedq_ok(
        home,
        &["audit", "verify", "--org", &run.a.org().to_string(), "--save", checkpoint.to_str().unwrap()],
        None,
    );
    assert!(out.contains("they give the signed root"), "{out}");
    assert!(
        out.contains(&format!("key published SHA256:{}", hex::encode(run.a.current().id().as_bytes()))),
        "{out}"
    );
    assert!(out.contains(&format!("collaboration created {}", run.collaboration)), "{out}");
    assert!(out.contains("current key, as the server serves it, has its leaf in the log"), "{out}");
    let json: Value = serde_json::from_str(&fedq_ok(home, &["audit", "verify", "--json"], None)).unwrap();
    let size = json["tree_head"]["size"].as_u64().unwrap();
    assert!(size >= 6, "{json}");

    // More traffic; from the checkpoint only the new leaves are read.
    let more = run.b_to_a(b"later");
    run.node_b.publish(&more).await.unwrap();
    run.node_a.next(20).await;
    let out = eventually(30, "a verification past the checkpoint", || async {
        let (code, out, _) =
            fedq_status(home, &["audit", "verify", "--from", checkpoint.to_str().unwrap()], None);
        (code == Some(0) && !out.contains(&format!("leaves {size} to {size}:"))).then_some(out)
    })
    .await;
    assert!(out.contains(&format!("verified   leaves {size} to")), "{out}");

    // B's key swapped in the server's database, which no leaf records: the server now serves a
    // key outside the log, named with its organization; evidence, exit status 4.
    let swapped = fedq::keys::OrgKey::generate();
    let b = run.b.org();
    app.swap_key_in_database(b, &swapped).await;
    let (code, out, err) = fedq_status(home, &["audit", "verify"], None);
    assert_eq!(code, Some(4), "{out}{err}");
    assert!(err.contains("no leaf of the log publishes"), "{err}");
    assert!(err.contains(&format!("({b}): key {}", swapped.id())), "{err}");
    assert!(out.contains("they give the signed root"), "the log itself verified: {out}");
    // No checkpoint of a log caught serving an unlogged key: a later --from would start past it.
    let caught = home.join("caught.json");
    let (code, _, _) = fedq_status(home, &["audit", "verify", "--save", caught.to_str().unwrap()], None);
    assert_eq!(code, Some(4));
    assert!(!caught.exists(), "no checkpoint is saved when the verification fails");
    app.restore_key_in_database(b, &swapped).await;

    // A pinned key that is not the log's, and a rewritten leaf: evidence, exit status 4.
    let (code, _, err) = fedq_status(home, &["audit", "--log-key", &"ab".repeat(32), "verify"], None);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("not the pinned"), "{err}");
    let forged = Leaf::Event(fedq::transparency::EventLeaf {
        organization: run.a.org(),
        at: fedq::time::Timestamp::now(),
        event: Event::KeyPublished { key: [7; 32] },
    })
    .encode();
    app.sql()
        .await
        .execute(
            "UPDATE transparency_leaves SET leaf = $1, leaf_hash = $2 WHERE idx = 0",
            &[&forged, &leaf_hash(&forged).as_slice()],
        )
        .await
        .unwrap();
    let (code, _, err) = fedq_status(home, &["audit", "verify"], None);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("do not give the root it signed"), "{err}");
    app.cleanup().await;
}

/// The server shows A a history B never saw: A's node seals the head it checked into its run
/// message, and B, comparing it with its own, finds two heads of one size with different roots,
/// both signed by the log. The same message with the head B also saw raises nothing.
#[tokio::test]
async fn two_organizations_shown_different_histories_notice_it_from_what_they_send() {
    let fed = monitored().await;
    let node = fed.node.as_ref().unwrap();
    let (submitted, job_a) = fed.submit_with_a(serde_json::json!([])).await;
    let key = fedq::keys::SeedFile { header: "", prefix: "fedq-log1:" }
        .load(&crate::support::log_key_file(&fed.app.db_name))
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&key);
    let honest = {
        let sql = fed.app.sql().await;
        let size = node.log_report().size.unwrap();
        let row = sql
            .query_one(
                "SELECT root, timestamp_ms, signature FROM transparency_heads WHERE size = $1",
                &[&(size as i64)],
            )
            .await
            .unwrap();
        SignedTreeHead {
            head: fedq::transparency::TreeHead {
                size,
                root: row.get::<_, &[u8]>(0).try_into().unwrap(),
                timestamp_ms: row.get::<_, i64>(1) as u64,
            },
            signature: row.get::<_, &[u8]>(2).try_into().unwrap(),
        }
    };
    fed.send_from_a_seen(&submitted, job_a, &[("same", b"x")], Some((&honest).into())).await;
    let forked = fedq::transparency::TreeHead { root: [0x5a; 32], ..honest.head }.sign(&key);
    // The honest head first: if it raised an alarm, it would be there before the forked one's.
    eventually(30, "the honest message stored at B", || async {
        let inbox = fed.config.node.state_dir.join("runs").join(submitted.run.to_string()).join("inbox");
        (std::fs::read_dir(inbox).ok()?.count() >= 1).then_some(())
    })
    .await;
    assert_eq!(node.log_report().alarms, Vec::<String>::new(), "the same history raises nothing");
    fed.send_from_a_seen(&submitted, job_a, &[("forked", b"y")], Some((&forked).into())).await;
    let alarm = alarm(&fed, "different histories").await;
    assert!(alarm.contains(&hex::encode([0x5a; 32])) && alarm.contains(&fed.a.org().to_string()), "{alarm}");
    assert_eq!(node.log_report().alarms, vec![alarm], "the honest head raised nothing");
    fed.cleanup().await;
}

/// The sequencer's head insert fails once (a trigger raises on the first non-empty head): the
/// step's transaction is rolled back, and the tree the server keeps in memory must forget the
/// leaves it had appended, or the next step signs them again after a gap. After the failure the
/// log goes on: dense indexes, every leaf once, the entries giving the signed root.
#[tokio::test]
async fn a_failed_sequencing_step_leaves_the_log_consistent() {
    let app = spawn_app().await;
    let sql = app.sql().await;
    sql.batch_execute(
        "CREATE SEQUENCE head_failures;
         CREATE FUNCTION fail_first_head() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.size > 0 THEN IF nextval('head_failures') = 1 THEN
           RAISE EXCEPTION 'injected failure of the head insert'; END IF; END IF; RETURN NEW; END $$;
         CREATE TRIGGER fail_first_head BEFORE INSERT ON transparency_heads
         FOR EACH ROW EXECUTE FUNCTION fail_first_head();",
    )
    .await
    .unwrap();
    let _a = app.org("a").await;
    eventually(30, "the injected failure to happen", || async {
        let n: i64 = sql.query_one("SELECT last_value FROM head_failures", &[]).await.ok()?.get(0);
        let called: bool = sql.query_one("SELECT is_called FROM head_failures", &[]).await.ok()?.get(0);
        (called && n >= 1).then_some(())
    })
    .await;
    let _b = app.org("b").await;
    let reader = LogReader::new(&app, &app.root_token).await;
    let pending = || async {
        let n: i64 = sql.query_one("SELECT count(*) FROM transparency_pending", &[]).await.unwrap().get(0);
        n
    };
    eventually(30, "the sequencer to catch up after the failure", || async {
        (pending().await == 0).then_some(())
    })
    .await;
    let leaves: i64 = sql.query_one("SELECT count(*) FROM transparency_leaves", &[]).await.unwrap().get(0);
    let top: i64 =
        sql.query_one("SELECT coalesce(max(idx), -1) FROM transparency_leaves", &[]).await.unwrap().get(0);
    assert_eq!(top + 1, leaves, "the leaves' indexes are dense");
    let head = reader.head_of_at_least(leaves as u64).await;
    assert_eq!(head.head.size, leaves as u64, "the newest head covers exactly the stored leaves");
    let mut tree = MerkleTree::new();
    for leaf in reader.entries(&head).await {
        tree.push(&leaf);
    }
    assert_eq!(tree.root(), head.head.root, "the entries give the signed root");
    app.cleanup().await;
}

/// The real server behind a front that answers every consistency proof with 503, as a server
/// that forked the log answers the proofs it cannot give; everything else is forwarded.
async fn withholding_proofs(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    use warp::Filter as _;
    let client = reqwest::Client::new();
    let route = warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::bytes())
        .then(
            move |method: warp::http::Method,
                  path: warp::path::FullPath,
                  query: String,
                  auth: Option<String>,
                  kind: Option<String>,
                  body: warp::hyper::body::Bytes| {
                let client = client.clone();
                async move {
                    let respond = |status: u16, body: Vec<u8>| {
                        warp::http::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(body)
                            .unwrap()
                    };
                    if path.as_str().ends_with("/transparency/proof/consistency") {
                        return respond(
                            503,
                            br#"{"code":"unavailable","message":"try again later"}"#.to_vec(),
                        );
                    }
                    let query = if query.is_empty() { String::new() } else { format!("?{query}") };
                    let mut request = client
                        .request(method, format!("http://{upstream}{}{query}", path.as_str()))
                        .body(body.to_vec());
                    if let Some(auth) = auth {
                        request = request.header("authorization", auth);
                    }
                    if let Some(kind) = kind {
                        request = request.header("content-type", kind);
                    }
                    match request.send().await {
                        Ok(answer) => {
                            let status = answer.status().as_u16();
                            respond(status, answer.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
                        }
                        Err(_) => respond(502, Vec::new()),
                    }
                }
            },
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    addr
}

/// A shows B a head of a history B's log never had (a larger tree, signed by the log), and the
/// server, asked for the proof joining it to B's head, answers 503 every time instead of the 404
/// that would give it away. B keeps A's head as evidence, asks again at every check, and after
/// `transparency.proof_tries` checks raises `proof_withheld` with both heads. (Before, B logged
/// the failure and forgot the head: a forking server that failed its cross-fork proofs was
/// never caught.)
#[tokio::test]
async fn a_withheld_consistency_proof_is_an_alarm_after_a_bounded_number_of_tries() {
    let mut fed = crate::support::node::Fed::new(crate::support::node::Fed::limits()).await;
    let front = withholding_proofs(fed.app.addr).await;
    fed.config.server.url = format!("http://{front}");
    fed.config.transparency.check_secs = 1;
    fed.config.transparency.proof_tries = 3;
    fed.start_node().await;
    let node = fed.node.as_ref().unwrap();
    eventually(30, "the monitor's first check", || async { node.log_report().size }).await;
    let (submitted, job_a) = fed.submit_with_a(serde_json::json!([])).await;
    let key = fedq::keys::SeedFile { header: "", prefix: "fedq-log1:" }
        .load(&crate::support::log_key_file(&fed.app.db_name))
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&key);
    let size = node.log_report().size.unwrap();
    let forked = fedq::transparency::TreeHead {
        size: size + 1_000,
        root: [0x6b; 32],
        timestamp_ms: u64::try_from(fedq::time::Timestamp::now().as_millis()).unwrap(),
    }
    .sign(&key);
    fed.send_from_a_seen(&submitted, job_a, &[("forked", b"y")], Some((&forked).into())).await;
    let alarm = alarm(&fed, "gave no consistency proof").await;
    assert!(alarm.contains(&hex::encode([0x6b; 32])) && alarm.contains(&fed.a.org().to_string()), "{alarm}");
    assert!(alarm.contains("in 3 checks"), "{alarm}");
    fed.cleanup().await;
}

/// A job_start the broker delivers again (as after a broker restart mid-run) and the result B's
/// node sends again for it have the leaves of their first passage, replayed by an earlier check
/// and so not among the new leaves of the next. B's monitor asks the log to prove them included
/// instead of alarming (before, both raised `envelope_not_logged` against an honest server);
/// an envelope truly left out of the log still alarms (the test above).
#[tokio::test]
async fn envelopes_delivered_or_sent_again_are_proven_in_the_log_not_alarmed() {
    use futures_util::StreamExt as _;
    use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let fed = monitored().await;
    let broker = fed.app.amqp("guest", "guest").await.unwrap();
    let tap = broker.create_channel().await.unwrap();
    tap.queue_declare("tap-b".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    let b_key = fed.b.org().to_string();
    tap.queue_bind(
        "tap-b".into(),
        "fedq.deliver".into(),
        b_key.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut copies = tap
        .basic_consume(
            "tap-b".into(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let submitted = fed.submit(serde_json::json!([])).await;
    fed.result(submitted.task).await;
    let start = loop {
        let delivery = tokio::time::timeout(std::time::Duration::from_secs(30), copies.next())
            .await
            .expect("the job_start went by the tap")
            .unwrap()
            .unwrap();
        let header = envelope::peek_header(&delivery.data, usize::MAX).unwrap();
        if header.kind == fedq::protocol::Kind::JobStart && header.task == submitted.task {
            break delivery.data;
        }
    };
    // Once B's monitor has checked the leaves of the first passage (the redelivery must not find
    // them among the new leaves of a later check)...
    let sql = fed.app.sql().await;
    let logged = eventually(30, "the run's envelopes to be sequenced", || async {
        let pending: i64 = sql.query_one("SELECT count(*) FROM transparency_pending", &[]).await.ok()?.get(0);
        let leaves: i64 = sql.query_one("SELECT count(*) FROM transparency_leaves", &[]).await.ok()?.get(0);
        (pending == 0).then_some(leaves as u64)
    })
    .await;
    let node = fed.node.as_ref().unwrap();
    eventually(30, "B's monitor to check them", || async {
        (node.log_report().size? >= logged).then_some(())
    })
    .await;
    // ...the job_start is delivered to B again, as the broker does with what it had not seen
    // acknowledged, and B sends its stored result again.
    let again = broker.create_channel().await.unwrap();
    again.confirm_select(lapin::options::ConfirmSelectOptions::default()).await.unwrap();
    let confirm = again
        .basic_publish(
            "fedq.deliver".into(),
            b_key.as_str().into(),
            BasicPublishOptions::default(),
            &start,
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(matches!(confirm, lapin::Confirmation::Ack(_)), "{confirm:?}");
    let metrics = node.metrics_addr().expect("test nodes serve metrics");
    eventually(30, "B's monitor to prove the repeated envelopes in the log", || async {
        let text = crate::support::scrape(metrics).await;
        (crate::support::sample(&text, "fedq_node_log_envelopes_proven_total")? >= 2.0).then_some(())
    })
    .await;
    assert_eq!(node.log_report().alarms, Vec::<String>::new(), "no alarm against an honest log");
    fed.cleanup().await;
}

/// B's key swapped in the server's database, with no leaf recording it (what a curious operator
/// with the database would do): partners and clients refuse the swapped key, and B's own node
/// now says that the server hands out a key for B that is none of B's key files. (Before, no
/// monitor noticed: the log had no event to check.)
#[tokio::test]
async fn a_key_swapped_in_the_database_is_caught_by_its_organizations_node() {
    let fed = monitored().await;
    let swapped = fedq::keys::OrgKey::generate();
    fed.app.swap_key_in_database(fed.b.org(), &swapped).await;
    let alarm = alarm(&fed, "as this organization's current key").await;
    assert!(alarm.contains(&swapped.id().to_string()), "{alarm}");
    fed.cleanup().await;
}
