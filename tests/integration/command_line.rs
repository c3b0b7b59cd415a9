//! The `fedq` binary as a user runs it: key files, sealing, inspecting and opening envelopes.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn fedq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedq")).args(args).output().expect("the fedq binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = fedq(args);
    assert!(out.status.success(), "fedq {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn public_key(key: &Path) -> String {
    ok(&["keys", "public", "--key", key.to_str().unwrap()]).trim().to_owned()
}

fn org_id() -> String {
    fedq::ids::OrgId::new().to_string()
}

#[test]
fn generate_writes_a_private_file_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("org.key");
    let out = ok(&["keys", "generate", "--out", key.to_str().unwrap()]);
    assert!(out.contains("public key:   fedq-pk1:"), "{out}");
    assert!(out.contains("fingerprint:  SHA256:"), "{out}");
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let secret = fs::read_to_string(&key).unwrap();
    assert!(!out.contains(secret.lines().last().unwrap()), "the secret must not be printed");

    let again = fedq(&["keys", "generate", "--out", key.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    assert_eq!(fs::read_to_string(&key).unwrap(), secret);

    // The fingerprint printed at generation is the one computed from the public key.
    let pk = public_key(&key);
    let fingerprint = ok(&["keys", "fingerprint", &pk]);
    assert!(out.contains(fingerprint.trim()), "{out} / {fingerprint}");
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("org.key");
    ok(&["keys", "generate", "--out", key.to_str().unwrap()]);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    let out = fedq(&["keys", "public", "--key", key.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0640") && stderr.contains("chmod 600"), "{stderr}");
}

#[test]
fn seal_inspect_open_round_trip_and_tampering_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    ok(&["keys", "generate", "--out", &p("a.key")]);
    ok(&["keys", "generate", "--out", &p("b.key")]);
    let (org_a, org_b) = (org_id(), org_id());
    let (pk_a, pk_b) = (public_key(Path::new(&p("a.key"))), public_key(Path::new(&p("b.key"))));
    fs::write(p("msg"), "x1 = 18446744073709551000").unwrap();

    ok(&[
        "envelope",
        "seal",
        "--key",
        &p("a.key"),
        "--from-org",
        &org_a,
        "--to-org",
        &org_b,
        "--to-public-key",
        &pk_b,
        "--in",
        &p("msg"),
        "--out",
        &p("msg.env"),
    ]);
    let envelope = fs::read(p("msg.env")).unwrap();
    assert!(!envelope.windows(5).any(|w| w == b"18446"), "the payload is not visible in the envelope");

    let header: serde_json::Value =
        serde_json::from_str(&ok(&["envelope", "inspect", &p("msg.env")])).unwrap();
    assert_eq!(header["sender"], org_a.as_str());
    assert_eq!(header["recipient"], org_b.as_str());
    assert_eq!(header["kind"], "run_message");

    let open_at_b = |file: &str| {
        vec![
            "envelope".to_owned(),
            "open".into(),
            "--key".into(),
            p("b.key"),
            "--org".into(),
            org_b.clone(),
            "--from-org".into(),
            org_a.clone(),
            "--from-public-key".into(),
            pk_a.clone(),
            "--in".into(),
            p(file),
        ]
    };
    let args = open_at_b("msg.env");
    let opened = ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(opened, "x1 = 18446744073709551000");

    let mut tampered = envelope.clone();
    let last = tampered.len() - 100;
    tampered[last] ^= 1;
    fs::write(p("bad.env"), tampered).unwrap();
    let args = open_at_b("bad.env");
    let out = fedq(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad_signature"));
    assert!(out.stdout.is_empty(), "nothing of a refused envelope is written");

    // Opened with the wrong organization's key: refused before any decryption.
    let out = fedq(&[
        "envelope",
        "open",
        "--key",
        &p("a.key"),
        "--org",
        &org_a,
        "--from-org",
        &org_a,
        "--from-public-key",
        &pk_a,
        "--in",
        &p("msg.env"),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong_recipient"));
}

/// `fedq node` with `args` in a mount namespace of its own whose `/etc` is this machine's with an
/// empty `/etc/fedq` laid over it (the machine's own stays untouched), after `setup` (shell)
/// has run there.
fn fedq_node_with_private_etc(setup: &str, args: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
    fs::create_dir_all(&upper).unwrap();
    fs::create_dir_all(&work).unwrap();
    let script = format!(
        "set -e; mount -t overlay overlay -o lowerdir=/etc,upperdir={},workdir={} /etc; mkdir -p /etc/fedq; \
         mount -t tmpfs tmpfs /etc/fedq; {setup}; exec {} node {args}",
        upper.display(),
        work.display(),
        env!("CARGO_BIN_EXE_fedq"),
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare runs")
}

/// Without `--config`, `fedq node check` (and the worker, and `gc`) read /etc/fedq/node.toml,
/// where `fedq node enroll` writes it, and every error about the settings names the file read.
#[test]
fn node_commands_read_the_settings_enroll_writes_and_name_the_file() {
    let example = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/compose/node/node.toml")).unwrap();
    let broken = example.replacen("name = \"registry-a-1\"", "name = \"not a node name\"", 1);
    assert_ne!(broken, example, "the example names its node");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    fs::write(&file, &broken).unwrap();

    // Nothing at the default path: what to do.
    for args in ["check", "gc", ""] {
        let out = fedq_node_with_private_etc("true", args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "fedq node {args}: {stderr}");
        assert!(
            stderr.contains("no node settings at /etc/fedq/node.toml") && stderr.contains("fedq node enroll"),
            "fedq node {args}: {stderr}"
        );
    }
    // The file at the default path is the one read.
    let out = fedq_node_with_private_etc(&format!("cp {} /etc/fedq/node.toml", file.display()), "check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("/etc/fedq/node.toml: invalid node configuration: node.name is"), "{stderr}");
    // A file given with --config is named the same way.
    let out = fedq(&["node", "check", "--config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}: invalid node configuration: node.name is", file.display())),
        "{stderr}"
    );
}

/// `fedq login` to a plain `http://` server beyond this machine is refused before anything is
/// sent, and says how this command allows it: its `--allow-plaintext` flag, not a setting.
#[test]
fn login_over_plain_text_names_the_flag_that_allows_it() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedq"))
        .args(["login", "--server", "http://registry.invalid:8080", "--user", "ada", "--password-stdin"])
        .env("HOME", tempfile::tempdir().unwrap().path())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"a-long-password-123\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("pass --allow-plaintext") && stderr.contains("https://"), "{stderr}");
    assert!(!stderr.contains("tls.allow_plaintext"), "no setting of the server's is suggested: {stderr}");
}

/// Settings with a relative state directory, key file or data source are refused by `fedq node
/// check` (and the node) with the setting named: Docker mounts only absolute paths, and the
/// service does not run where the path was typed.
#[test]
fn node_check_refuses_relative_paths() {
    let example = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/compose/node/node.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    let relative = example.replacen("state_dir = \"/var/lib/fedq\"", "state_dir = \"state\"", 1);
    assert_ne!(relative, example, "the example sets its state directory");
    fs::write(&file, &relative).unwrap();
    let out = fedq(&["node", "check", "--config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("node.state_dir must be an absolute path"), "{stderr}");
}
