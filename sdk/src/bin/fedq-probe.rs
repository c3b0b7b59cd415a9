//! `fedq-probe`: a diagnostic algorithm. Its input is a JSON list of steps (try a TCP
//! connection, write a file, allocate memory, read the run volume, talk to the endpoint…); it
//! runs them in order and posts what each one found as its result. The node's isolation tests
//! and its benchmark run it; an operator can run it to check a node's sandbox.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use fedq_sdk::Node;
use serde_json::{Value, json};

/// One message with the step's `topic`, from its `from` organization if it names one, else from
/// anyone (what an algorithm that does not check senders would take).
fn receive(node: &Node, step: &Value) -> Result<fedq_sdk::Message, fedq_sdk::Error> {
    let topic = step["topic"].as_str().unwrap_or("");
    if let Some(from) = step["from"].as_str() {
        return node.receive_one(from, topic);
    }
    loop {
        let mut messages = node.receive(Some(topic), Duration::from_secs(30))?;
        if !messages.is_empty() {
            return Ok(messages.remove(0));
        }
    }
}

fn main() {
    // `fedq-probe listen PORT`: a plain TCP listener, the target of isolation tests.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("listen") {
        let port = args.get(2).and_then(|p| p.parse::<u16>().ok()).unwrap_or(9000);
        let listener = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| fail(&format!("listen: {e}")));
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"hello\n");
        }
        return;
    }
    // `fedq-probe hold`: a process that only waits, what the fork bomb step multiplies.
    if args.get(1).map(String::as_str) == Some("hold") {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let node = match Node::from_env() {
        Ok(node) => node,
        Err(e) => {
            eprintln!("fedq-probe: {e}");
            std::process::exit(2);
        }
    };
    let input = node.input().unwrap_or_else(|e| fail(&format!("cannot read input: {e}")));
    let steps: Vec<Value> = if input.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&input).unwrap_or_else(|e| fail(&format!("input is not a JSON list: {e}")))
    };
    let mut found = Vec::with_capacity(steps.len());
    let mut exit_code = 0;
    for step in &steps {
        eprintln!("fedq-probe: {step}");
        let op = step["op"].as_str().unwrap_or("");
        let outcome = match op {
            "connect" => connect(step),
            "udp" => udp(step),
            "resolve" => resolve(step),
            "listen" => listen(step),
            "write" => write(step),
            "fill" => fill(step),
            "read" => read(step),
            "uid" => uid(),
            "alloc" => alloc(step),
            "sleep" => {
                std::thread::sleep(Duration::from_millis(step["ms"].as_u64().unwrap_or(0)));
                json!("ok")
            }
            "endpoint" => json!(std::env::var("FEDQ_ENDPOINT").unwrap_or_default()),
            "token" => json!(std::env::var("FEDQ_TOKEN").unwrap_or_default()),
            "job" => node.job().map(|j| json!(j)).unwrap_or_else(|e| json!(format!("error: {e}"))),
            "orgs" => node.organizations().map(|o| json!(o)).unwrap_or_else(|e| json!(format!("error: {e}"))),
            "send" => {
                let body = step["body"].as_str().unwrap_or("").as_bytes();
                let sent =
                    node.send(step["to"].as_str().unwrap_or(""), step["topic"].as_str().unwrap_or(""), body);
                json!(sent.map(|()| "ok".to_owned()).unwrap_or_else(|e| format!("error: {e}")))
            }
            "receive" => match receive(&node, step) {
                Ok(m) => json!({"from": m.from, "body": String::from_utf8_lossy(&m.body)}),
                Err(e) => json!(format!("error: {e}")),
            },
            "subtask" => subtask(&node, step),
            "subtasks" => subtasks(&node, step),
            "contribute" | "secure_sum" => secure_sum(&node, op, step),
            "print" => {
                let text = step["text"].as_str().unwrap_or("");
                println!("{text}");
                json!("ok")
            }
            "exit" => {
                exit_code = step["code"].as_i64().unwrap_or(0) as i32;
                break;
            }
            "fork_bomb" => fork_bomb(),
            "flood" => flood(step),
            "big_result" => {
                // Posts a result of `mib` MiB and reports what the endpoint said.
                let mib = step["mib"].as_u64().unwrap_or(0) as usize;
                match node.post_result(&vec![b'x'; mib * 1024 * 1024]) {
                    Ok(()) => json!("accepted"),
                    Err(e) => json!(format!("error: {e}")),
                }
            }
            "no_result" => {
                // Exit without posting a result.
                std::process::exit(step["code"].as_i64().unwrap_or(0) as i32);
            }
            other => json!(format!("error: unknown step {other:?}")),
        };
        found.push(outcome);
    }
    let result = serde_json::to_vec(&found).expect("JSON values encode");
    if let Err(e) = node.post_result(&result) {
        fail(&format!("cannot post the result: {e}"));
    }
    std::process::exit(exit_code);
}

fn fail(message: &str) -> ! {
    eprintln!("fedq-probe: {message}");
    std::process::exit(3);
}

/// The step's `orgs`, with `"self"` standing for this node's organization `me`.
fn orgs_of(step: &Value, me: &str) -> Vec<String> {
    let named = step["orgs"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>());
    named
        .unwrap_or_default()
        .into_iter()
        .map(|o| if o == "self" { me.to_owned() } else { o.to_owned() })
        .collect()
}

/// Asks `times` times for a subtask of this image at `orgs` (`"self"` for this node's
/// organization), each organization listed `copies` times, with an input of `kib` KiB (not
/// steps: the subtasks fail at once), without waiting for them. Returns, per request, the number
/// of jobs created or the node's refusal.
fn subtasks(node: &Node, step: &Value) -> Value {
    let me = match node.job() {
        Ok(job) => job.organization,
        Err(e) => return json!(format!("error: {e}")),
    };
    let copies = step["copies"].as_u64().unwrap_or(1) as usize;
    let orgs = orgs_of(step, &me);
    let listed: Vec<&str> = orgs.iter().flat_map(|o| std::iter::repeat_n(o.as_str(), copies)).collect();
    let input = vec![b'x'; step["kib"].as_u64().unwrap_or(1) as usize * 1024];
    let outcomes: Vec<Value> = (0..step["times"].as_u64().unwrap_or(1))
        .map(|_| match node.create_subtask(&listed, None, &input) {
            Ok(created) => json!(created.jobs.len()),
            Err(e) => json!(format!("error: {e}")),
        })
        .collect();
    json!(outcomes)
}

/// Creates a subtask running this image with `steps` at `orgs` (`"self"` for this node's
/// organization), waits for it, and returns each job's status and output.
/// `contribute` (`values` to `round`) or `secure_sum` (of `round`), over `participants` (the
/// task's organizations by default) with `aggregator` (the first of them by default), waiting
/// up to `timeout_secs` (120 by default).
fn secure_sum(node: &Node, op: &str, step: &Value) -> Value {
    let job = match node.job() {
        Ok(job) => job,
        Err(e) => return json!(format!("error: {e}")),
    };
    let participants: Vec<String> = match step["participants"].as_array() {
        Some(listed) => listed.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect(),
        None => job.organizations.clone(),
    };
    let aggregator = step["aggregator"].as_str().map_or_else(|| job.organizations[0].clone(), str::to_owned);
    let round = step["round"].as_str().unwrap_or("");
    let timeout = Duration::from_secs(step["timeout_secs"].as_u64().unwrap_or(120));
    let outcome = match op {
        "contribute" => {
            let values: Vec<u64> =
                step["values"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
            node.contribute(round, &participants, &aggregator, &values, timeout).map(|()| json!("ok"))
        }
        _ => node.secure_sum(round, &participants, timeout).map(|sum| json!(sum)),
    };
    outcome.unwrap_or_else(|e| json!(format!("error: {e}")))
}

fn subtask(node: &Node, step: &Value) -> Value {
    let me = match node.job() {
        Ok(job) => job.organization,
        Err(e) => return json!(format!("error: {e}")),
    };
    let orgs = orgs_of(step, &me);
    let orgs: Vec<&str> = orgs.iter().map(String::as_str).collect();
    let input = serde_json::to_vec(&step["steps"]).expect("JSON values encode");
    let created = match node.create_subtask(&orgs, None, &input) {
        Ok(created) => created,
        Err(e) => return json!(format!("error: {e}")),
    };
    match node.wait_subtask(&created.task) {
        Ok(results) => json!(
            results
                .iter()
                .map(|r| json!({
                    "status": r.status,
                    "output": serde_json::from_slice::<Value>(&r.output).unwrap_or(Value::Null),
                    "reason": r.reason,
                }))
                .collect::<Vec<_>>()
        ),
        Err(e) => json!(format!("error: {e}")),
    }
}

/// Tries a TCP connection: "open", "refused", "timeout" or another error.
fn connect(step: &Value) -> Value {
    let Some(addr) = step["addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok()) else {
        return json!("error: addr must be ip:port");
    };
    let timeout = Duration::from_millis(step["timeout_ms"].as_u64().unwrap_or(1500));
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(mut stream) => {
            let _ = stream.write_all(b"probe\n");
            json!("open")
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => json!("refused"),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock => {
            json!("timeout")
        }
        Err(e) => json!(format!("error: {e}")),
    }
}

/// Sends one UDP datagram (`text`) to `addr`: "sent", or the error.
fn udp(step: &Value) -> Value {
    let Some(addr) = step["addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok()) else {
        return json!("error: addr must be ip:port");
    };
    let text = step["text"].as_str().unwrap_or("probe");
    match std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(text.as_bytes(), addr)) {
        Ok(_) => json!("sent"),
        Err(e) => json!(format!("error: {e}")),
    }
}

/// Resolves `name` through the container's resolver: the addresses found, or the error.
fn resolve(step: &Value) -> Value {
    use std::net::ToSocketAddrs as _;
    let name = step["name"].as_str().unwrap_or("");
    match (name, 80).to_socket_addrs() {
        Ok(addrs) => json!(addrs.map(|a| a.ip().to_string()).collect::<Vec<_>>()),
        Err(e) => json!(format!("error: {e}")),
    }
}

/// Listens on a port for `ms` milliseconds: "accepted" if anything connected, else "idle".
fn listen(step: &Value) -> Value {
    let port = step["port"].as_u64().unwrap_or(0) as u16;
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => return json!(format!("error: {e}")),
    };
    let _ = listener.set_nonblocking(true);
    let deadline = Instant::now() + Duration::from_millis(step["ms"].as_u64().unwrap_or(1000));
    while Instant::now() < deadline {
        if listener.accept().is_ok() {
            return json!("accepted");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    json!("idle")
}

fn write(step: &Value) -> Value {
    let path = step["path"].as_str().unwrap_or("");
    let data = step["data"].as_str().unwrap_or("");
    match std::fs::write(path, data) {
        Ok(()) => json!("ok"),
        Err(e) => json!(format!("error: {e}")),
    }
}

/// Writes `mib` MiB to `path`, a MiB at a time, until done or refused: the MiB written, and the
/// error that stopped it.
fn fill(step: &Value) -> Value {
    let mut file = match std::fs::File::create(step["path"].as_str().unwrap_or("")) {
        Ok(f) => f,
        Err(e) => return json!({"written_mib": 0, "error": e.to_string()}),
    };
    let chunk = vec![0x5a_u8; 1024 * 1024];
    for written in 0..step["mib"].as_u64().unwrap_or(0) {
        if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_data()) {
            return json!({"written_mib": written, "error": e.to_string()});
        }
    }
    json!({"written_mib": step["mib"], "error": null})
}

fn read(step: &Value) -> Value {
    match std::fs::read_to_string(step["path"].as_str().unwrap_or("")) {
        Ok(text) => json!(text),
        Err(e) => json!(format!("error: {e}")),
    }
}

/// The real user id, from the kernel (no libc call needed).
fn uid() -> Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|u| u.parse::<u64>().ok());
    json!(uid)
}

/// Allocates and touches `mib` MiB, one MiB at a time, so the memory is really used.
/// Starts processes without end: each is this binary waiting (`hold`). The container's pids
/// limit is what stops it; the node's wall-clock limit is what ends it. Never returns.
fn fork_bomb() -> Value {
    let me = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let (mut started, mut refused) = (0u64, 0u64);
    loop {
        match std::process::Command::new(&me).arg("hold").spawn() {
            Ok(_) => started += 1,
            Err(_) => {
                refused += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if (started + refused).is_multiple_of(1000) {
            eprintln!("fedq-probe: fork bomb: {started} started, {refused} refused");
        }
    }
}

/// Writes `mib` MiB to standard output.
fn flood(step: &Value) -> Value {
    let mib = step["mib"].as_u64().unwrap_or(0);
    let line = [b'y'; 1024];
    let mut out = std::io::stdout().lock();
    for _ in 0..mib * 1024 {
        if out.write_all(&line).is_err() {
            return json!("error: stdout closed");
        }
    }
    let _ = out.flush();
    json!(format!("wrote {mib} MiB"))
}

fn alloc(step: &Value) -> Value {
    let mib = step["mib"].as_u64().unwrap_or(0) as usize;
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(mib);
    for i in 0..mib {
        blocks.push(vec![(i % 251) as u8 + 1; 1024 * 1024]);
    }
    let sum: u64 = blocks.iter().map(|b| u64::from(b[0])).sum();
    json!(format!("allocated {mib} MiB ({sum})"))
}
