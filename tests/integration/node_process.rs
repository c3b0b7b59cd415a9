//! `fedq node` as a process: `kill -9` while a job runs, restart, and the job's result arrives
//! exactly once; the server shows the node offline within 10 s of its death and online again
//! after it reconnects. And `kill -9` in the middle of 24 jobs, four at a time: after the
//! restart every job completes and each result is routed exactly once.

use crate::support;

use std::time::Instant;

use fedq::protocol::JobStatus;
use serde_json::{Value, json};
use support::newcomer;
use support::node::Fed;

async fn online(fed: &Fed) -> bool {
    let id = fed.registration["node"]["id"].as_str().unwrap();
    let (status, nodes) = fed.app.call("GET", "/nodes", Some(&fed.app.root_token), None).await;
    assert_eq!(status, 200, "{nodes}");
    nodes.as_array().unwrap().iter().find(|n| n["id"] == id).is_some_and(|n| n["online"] == Value::Bool(true))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_mid_job_reruns_it_after_a_restart_and_the_result_arrives_once() {
    let mut fed = Fed::new(Fed::limits()).await;
    fed.spawn_node_process();
    support::eventually(30, "the node to show online", || async { online(&fed).await.then_some(()) }).await;

    let submitted = fed.submit(json!([{"op": "sleep", "ms": 3000}, {"op": "print", "text": "done"}])).await;
    let first = fed.wait_running(submitted.job).await;
    let mut process = fed.guard.process.take().unwrap();
    process.kill().unwrap(); // SIGKILL
    process.wait().unwrap();
    let died = Instant::now();
    support::eventually(10, "the server to show the node offline", || async {
        (!online(&fed).await).then_some(())
    })
    .await;
    let offline_after = died.elapsed();

    fed.spawn_node_process();
    support::eventually(30, "the node to show online again", || async { online(&fed).await.then_some(()) })
        .await;
    let result = fed.result(submitted.task).await;
    assert_eq!(result.status, JobStatus::Completed, "{result:?}");
    assert!(fed.container_of(submitted.job).is_none_or(|c| c != first), "the orphaned container was removed");

    // Exactly once: one result routed for the job, however many times it ran.
    let routed = fed.app.routed(submitted.task, "job_result").await;
    assert_eq!(routed, 1);
    // And it stays once: a later look finds no second result.
    let (_, body) =
        fed.app.call("GET", &format!("/tasks/{}/results", submitted.task), Some(&fed.researcher), None).await;
    assert_eq!(body["results"].as_array().unwrap().len(), 1, "{body}");
    eprintln!("node shown offline {offline_after:?} after kill -9");
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_during_many_jobs_completes_each_exactly_once_after_a_restart() {
    const JOBS: usize = 24;
    let limits = fedq::node::config::Limits { concurrent_jobs: 4, ..Fed::limits() };
    let mut fed = Fed::new(limits).await;
    fed.spawn_node_process();
    support::eventually(30, "the node to show online", || async { online(&fed).await.then_some(()) }).await;
    let mut tasks = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        let steps = json!([{"op": "sleep", "ms": 1500}, {"op": "print", "text": format!("job {i}")}]);
        tasks.push(fed.submit(steps).await.task);
    }
    // Kill it once some results are out and others are not.
    support::eventually(120, "a few results", || async {
        let (done, _) = fed.app.routed_results(&tasks).await;
        (done >= 4).then_some(())
    })
    .await;
    let mut process = fed.guard.process.take().unwrap();
    process.kill().unwrap(); // SIGKILL
    process.wait().unwrap();
    let (done_at_kill, _) = fed.app.routed_results(&tasks).await;
    assert!(done_at_kill < JOBS as i64, "jobs were still pending when the node died");

    fed.spawn_node_process();
    for task in &tasks {
        let result = fed.result(*task).await;
        assert_eq!(result.status, JobStatus::Completed, "{result:?}");
    }
    let (done, most) = fed.app.routed_results(&tasks).await;
    assert_eq!(done, JOBS as i64, "every job has a routed result");
    assert_eq!(most, 1, "no job's result was routed twice");
    eprintln!("{done_at_kill} of {JOBS} results were out when the node was killed");
    fed.cleanup().await;
}

/// `kill -9` of a node whose job had already taken a run message (Secure Sum's x1, say): the
/// rerun after the restart gets the message again, instead of waiting for it until the job's
/// time limit.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_taken_by_a_job_cut_short_by_kill_9_is_given_to_its_rerun() {
    let mut fed = Fed::new(Fed::limits()).await;
    fed.spawn_node_process();
    support::eventually(30, "the node to show online", || async { online(&fed).await.then_some(()) }).await;

    // One task, one run: a job at A (played by the test) and the probe at B, which takes x1
    // and then works for a while.
    let steps_b = json!([{"op": "receive", "topic": "x1"}, {"op": "sleep", "ms": 4000}]);
    let (submitted, job_a) = fed.submit_with_a(steps_b).await;
    fed.wait_running(submitted.job).await;
    fed.send_from_a(&submitted, job_a, &[("x1", b"the-value-of-x1")]).await;
    let inbox = fed.config.node.state_dir.join("runs").join(submitted.run.to_string()).join("inbox");
    support::eventually(30, "B's job to take x1", || async {
        std::fs::read_dir(&inbox)
            .ok()?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".taken-"))
            .then_some(())
    })
    .await;
    let mut process = fed.guard.process.take().unwrap();
    process.kill().unwrap(); // SIGKILL
    process.wait().unwrap();
    fed.spawn_node_process();

    let result = fed.result(submitted.task).await;
    assert_eq!(result.status, JobStatus::Completed, "{result:?}");
    let found: Vec<Value> = serde_json::from_slice(&result.output).unwrap();
    assert_eq!(found[0]["body"], "the-value-of-x1", "the rerun got x1: {found:?}");
    fed.cleanup().await;
}

/// An organization's administrator creates a token; on the node's machine one command enrolls
/// the node and writes settings the node starts from as they are; `fedq node check` passes on
/// them and names what to fix once something is broken; a token works once.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_enrolls_with_one_token_and_starts_from_the_settings_written() {
    support::node::ensure_images();
    let app = support::spawn_app().await;
    let org = app.org("registry-a").await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let server = format!("http://{}", app.addr);
    let (ok, _, err) = support::fedq_command(
        h,
        &["login", "--server", &server, "--user", "admin-of-registry-a", "--password-stdin"],
        Some("a-long-password-123\n"),
    );
    assert!(ok, "{err}");
    let name = format!("enr-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (ok, token, err) =
        support::fedq_command(h, &["admin", "enrollment", "create", "registry-a", &name], None);
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("fedq_e_"), "{token}");

    // The organization's key, as its administrator copied it to the node's machine.
    let key = h.join("org.key");
    org.current().write_new(&key).unwrap();
    let data = h.join("patients.csv");
    std::fs::write(&data, "id\n1\n").unwrap();
    let config = h.join("etc/node.toml");
    let (config_s, key_s, org_s) = (config.to_str().unwrap(), key.to_str().unwrap(), org.org().to_string());
    let state = h.join("state");
    let unit = h.join("fedq-node.service");
    let enroll = [
        "node",
        "enroll",
        "--server",
        &server,
        "--token",
        &token,
        "--config",
        config_s,
        "--key",
        key_s,
        "--state-dir",
        state.to_str().unwrap(),
        "--data",
        &format!("patients={}", data.display()),
        "--allow",
        support::node::PROBE,
        "--requester",
        &org_s,
        "--unit",
        unit.to_str().unwrap(),
    ];
    let mut guard = support::node::NodeGuard { name: name.clone(), process: None };
    let (ok, out, err) = support::fedq_command(h, &enroll, None);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains(&format!("enrolled node {name} of registry-a")), "{out}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    // The server's transparency-log key is pinned at enrollment.
    let (_, log_key) = app.call("GET", "/transparency/key", Some(&app.root_token), None).await;
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains(&format!("log_key = \"{}\"", log_key["public_key"].as_str().unwrap())),
        "{written}"
    );
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        unit_text.contains(&format!("ExecStart=/usr/local/bin/fedq node --config {config_s}")),
        "{unit_text}"
    );

    // The token is spent.
    let (ok, _, err) = support::fedq_command(h, &[&enroll[..], &["--force"]].concat(), None);
    assert!(!ok && err.contains("unknown, already used or expired"), "{err}");

    let (ok, out, err) = support::fedq_command(h, &["node", "check", "--config", config_s], None);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("all 9 checks passed"), "{out}");

    // The node runs from the settings as written.
    let log = std::fs::File::create(h.join("node.log")).unwrap();
    guard.process = Some(
        std::process::Command::new(env!("CARGO_BIN_EXE_fedq"))
            .args(["node", "--config", config_s])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    support::eventually(30, "the enrolled node to show online", || async {
        let (_, nodes) = app.call("GET", "/nodes", Some(&app.root_token), None).await;
        nodes
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == name.as_str() && n["online"] == true)
            .then_some(())
    })
    .await;

    // Broken: the data source is gone and the key file is readable by others.
    std::fs::remove_file(&data).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out, _) = support::fedq_command(h, &["node", "check", "--config", config_s], None);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  data sources: not found: patients") && out.contains("chmod 600"), "{out}");

    // Revoked by its administrator, by name: the check says so.
    let (ok, out, err) = support::fedq_command(h, &["admin", "node", "list"], None);
    assert!(ok && out.contains(&format!("name={name}")), "{out}\n{err}");
    let (ok, out, err) = support::fedq_command(h, &["admin", "node", "revoke", &name], None);
    assert!(ok && out.contains("revoked"), "{out}\n{err}");
    let (_, out, _) = support::fedq_command(h, &["node", "check", "--config", config_s], None);
    assert!(out.contains("FAIL  server:") && out.contains("the node is revoked"), "{out}");
    drop(guard);
    app.cleanup().await;
}

/// The newcomer's path of docs/node.md, by the book and with the command line only, for three
/// registries on fresh services: organizations, administrators and a collaboration; per
/// registry its key generated and published, an enrollment token, `fedq node enroll` with the
/// partners' pins, `fedq node check` and the node started from the settings as written; then
/// the researcher's Secure Sum. Counts the commands and the time, as docs/node.md reports them.
#[tokio::test(flavor = "multi_thread")]
async fn three_registries_enroll_by_the_book_and_run_secure_sum() {
    support::node::ensure_images();
    let app = support::spawn_app().await;
    let server = format!("http://{}", app.addr);
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let registries =
        newcomer::three_registries(&server, None, support::ROOT_PASSWORD, work.path(), [10, 11, 12]);
    for (i, took) in registries.node_commands.iter().enumerate() {
        assert!(*took <= 4, "enrolling node {i} took {took} commands");
    }
    newcomer::nodes_online(&registries.root, 3).await;
    let online_after = started.elapsed();

    let mut args = newcomer::secure_sum_args(&registries.key);
    args.extend(["--wait", "--json", "--timeout", "120"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = support::fedq_command(&registries.researcher, &args, None);
    assert!(ok, "{out}\n{err}");
    assert_eq!(newcomer::learned(&out), vec![10 + 11 + 12; 3], "{out}");
    eprintln!(
        "newcomer path: {} commands for the federation, per registry 3 for its key and {:?} to enroll and start \
         its node; three nodes online after {online_after:.1?}, Secure Sum done after {:.1?}, {} commands in all",
        registries.federation_commands,
        registries.node_commands,
        started.elapsed(),
        registries.commands + 1
    );
    drop(registries);
    app.cleanup().await;
}

/// Test images tagged for one test, removed when it ends, passed or not.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = std::process::Command::new("docker").args(["rmi", "--no-prune", image]).output();
        }
    }
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The image patterns the server shows for the node, from its heartbeats.
async fn shown_images(fed: &Fed) -> Vec<String> {
    let id = fed.registration["node"]["id"].as_str().unwrap();
    let (_, nodes) = fed.app.call("GET", "/nodes", Some(&fed.app.root_token), None).await;
    let node = nodes.as_array().unwrap().iter().find(|n| n["id"] == id).cloned().unwrap_or_default();
    node["policy"]["images"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str().map(str::to_owned))
        .collect()
}

/// The result of a job of `image` at the node, in a run of its own.
async fn result_of(fed: &Fed, image: &str) -> fedq::protocol::JobResult {
    let submitted =
        fed.submit_image(image, fedq::ids::RunId::new(), json!([{"op": "print", "text": "ran"}])).await;
    fed.result(submitted.task).await
}

/// `fedq node policy allow|list|remove` against the settings of a running `fedq node`: each
/// change applies within seconds without a restart, the rule is pinned to the image's id (a
/// rebuild under the same name is refused), and a broken edit by hand leaves the rules in force.
#[tokio::test(flavor = "multi_thread")]
async fn policy_changes_apply_to_a_running_node_without_a_restart() {
    let mut fed = Fed::new(Fed::limits()).await;
    let name = format!("fedq-test/policy-{}", uuid::Uuid::new_v4().simple());
    let image = format!("{name}:1");
    let _images = Images(vec![image.clone()]);
    run("docker", &["tag", support::node::PROBE, &image], None);
    let config = fed.config_path.to_str().unwrap().to_owned();
    let home = tempfile::tempdir().unwrap();
    let policy = |args: &[&str]| {
        let mut all = vec!["node", "policy"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", &config]);
        support::fedq_command(home.path(), &all, None)
    };
    fed.spawn_node_process();
    support::eventually(30, "the node to show online", || async { online(&fed).await.then_some(()) }).await;

    let before = result_of(&fed, &image).await;
    assert_eq!(before.status, JobStatus::Refused, "{before:?}");

    let (ok, out, err) = policy(&["allow", &image]);
    assert!(ok, "{out}{err}");
    let id = run("docker", &["image", "inspect", "-f", "{{.Id}}", &image], None);
    assert!(out.contains(&format!("allowed {name}@{id}")), "{out}");
    let pinned = format!("{name}@{id}");
    support::eventually(30, "the server to show the new rule", || async {
        shown_images(&fed).await.contains(&pinned).then_some(())
    })
    .await;
    let allowed = result_of(&fed, &image).await;
    assert_eq!(allowed.status, JobStatus::Completed, "applied without a restart: {allowed:?}");
    let (ok, listed, _) = policy(&["list"]);
    assert!(ok && listed.contains(&format!("image {pinned}  data: none")), "{listed}");

    // The same name rebuilt is another image: the pin refuses it.
    let rebuilt = run(
        "docker",
        &["build", "-q", "-t", &image, "-"],
        Some(&format!("FROM {}\nLABEL rebuilt=yes\n", support::node::PROBE)),
    );
    assert_ne!(rebuilt, id);
    let refused = result_of(&fed, &image).await;
    assert_eq!(refused.status, JobStatus::Refused, "{refused:?}");
    run("docker", &["tag", support::node::PROBE, &image], None);
    run("docker", &["rmi", "--no-prune", &rebuilt], None);

    // A broken edit by hand: the rules in force stay, and the node says why.
    let good = std::fs::read_to_string(&fed.config_path).unwrap();
    std::fs::write(
        &fed.config_path,
        format!("{good}\n[[policy.images]]\nname = \"x\"\ndata = [\"nowhere\"]\n"),
    )
    .unwrap();
    let log = fed.dir.path().join("node.log");
    support::eventually(30, "the node to refuse the broken settings", || async {
        std::fs::read_to_string(&log).unwrap().contains("policy not reloaded").then_some(())
    })
    .await;
    assert_eq!(
        result_of(&fed, &image).await.status,
        JobStatus::Completed,
        "the previous rules stay in force"
    );
    let (ok, _, err) = policy(&["allow", support::node::PROBE]);
    assert!(!ok && err.contains("\"nowhere\", which [data] does not define"), "{err}");
    std::fs::write(&fed.config_path, &good).unwrap();

    let (ok, out, err) = policy(&["remove", &name]);
    assert!(ok && out.contains(&format!("removed {pinned}")), "{out}{err}");
    support::eventually(30, "the server to show the rule gone", || async {
        (!shown_images(&fed).await.contains(&pinned)).then_some(())
    })
    .await;
    let after = result_of(&fed, &image).await;
    assert_eq!(after.status, JobStatus::Refused, "{after:?}");
    let (ok, _, err) = policy(&["remove", &name]);
    assert!(!ok && err.contains("no [[policy.images]] rule names"), "{err}");
    fed.cleanup().await;
}
