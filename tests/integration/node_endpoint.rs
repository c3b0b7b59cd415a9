//! The node-local endpoint, route by route: with the job's token, without a token, with another
//! job's token, and with a malformed body. Requests come from the host, which reaches the
//! endpoint on the algorithm network's gateway address; tokens are read from the containers'
//! environment, as only the containers (and the host's root) can.

use crate::support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fedq::protocol::JobStatus;
use serde_json::{Value, json};
use support::node::Fed;

struct Endpoint {
    base: String,
    http: reqwest::Client,
}

impl Endpoint {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some((kind, bytes)) = body {
            request = request.header("content-type", kind).body(bytes);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }
}

fn token_of(container: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", container])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("FEDQ_TOKEN="))
        .expect("the container has a token")
        .to_owned()
}

fn json_body(value: Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", serde_json::to_vec(&value).unwrap()))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_checks_the_token_and_the_body() {
    let mut fed = Fed::new(fedq::node::config::Limits { concurrent_jobs: 3, ..Fed::limits() }).await;
    fed.start_node().await;
    let one_steps = json!([{"op": "sleep", "ms": 60000}]);
    let two_steps = json!([{"op": "sleep", "ms": 60000}, {"op": "uid"}]);
    let one = fed.submit(one_steps.clone()).await;
    let two = fed.submit(two_steps.clone()).await;
    let t1 = token_of(&fed.wait_running(one.job).await);
    let t2 = token_of(&fed.wait_running(two.job).await);
    let ep = Endpoint { base: format!("http://{}/v1", fed.endpoint()), http: reqwest::Client::new() };
    let (b, a) = (fed.b.org().to_string(), fed.a.org().to_string());

    // GET /job
    let (s, job) = ep.call("GET", "/job", Some(&t1), None).await;
    assert_eq!((s, job["job"].as_str()), (200, Some(one.job.to_string().as_str())));
    assert_eq!(job["run"], one.run.to_string());
    assert_eq!(ep.call("GET", "/job", None, None).await.0, 401);
    assert_eq!(ep.call("GET", "/job", Some("not-a-token"), None).await.0, 401);
    let (_, other) = ep.call("GET", "/job", Some(&t2), None).await;
    assert_eq!(other["job"], two.job.to_string(), "a token names its own job only");

    // GET /input
    let (s, input) = ep.call("GET", "/input", Some(&t1), None).await;
    // The input is the JSON the researcher sealed, so it reads back as JSON.
    assert_eq!((s, input), (200, one_steps));
    let (_, input2) = ep.call("GET", "/input", Some(&t2), None).await;
    assert_eq!(input2, two_steps);
    assert_eq!(ep.call("GET", "/input", None, None).await.0, 401);

    // GET /organizations
    let (s, orgs) = ep.call("GET", "/organizations", Some(&t1), None).await;
    assert_eq!(s, 200, "{orgs}");
    let ids: Vec<&str> =
        orgs["organizations"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&a.as_str()) && ids.contains(&b.as_str()), "{orgs}");
    assert_eq!(ep.call("GET", "/organizations", None, None).await.0, 401);

    // POST /messages, then GET /messages: the message goes out sealed, through the router,
    // comes back to this node and is kept for run one only.
    let message = json!({"to": b, "topic": "greeting", "body": STANDARD.encode("hello run one")});
    let (s, sent) = ep.call("POST", "/messages", Some(&t1), json_body(message.clone())).await;
    assert_eq!(s, 202, "{sent}");
    assert_eq!(ep.call("POST", "/messages", None, json_body(message.clone())).await.0, 401);
    assert_eq!(
        ep.call("POST", "/messages", Some(&t1), Some(("application/json", b"{not json".to_vec()))).await.0,
        400
    );
    let bad_b64 = json!({"to": b, "topic": "x", "body": "%%%"});
    assert_eq!(ep.call("POST", "/messages", Some(&t1), json_body(bad_b64)).await.0, 400);
    let outsider = json!({"to": fedq::ids::OrgId::new(), "topic": "x", "body": ""});
    let (s, refused) = ep.call("POST", "/messages", Some(&t1), json_body(outsider)).await;
    assert_eq!((s, refused["code"].as_str()), (403, Some("not_in_run")), "{refused}");

    let (s, theirs) = ep.call("GET", "/messages?topic=greeting&wait=2", Some(&t2), None).await;
    assert_eq!((s, theirs["messages"].as_array().map(Vec::len)), (200, Some(0)), "another run sees nothing");
    let (s, mine) = ep.call("GET", "/messages?topic=greeting&wait=30", Some(&t1), None).await;
    assert_eq!(s, 200, "{mine}");
    let got = &mine["messages"][0];
    assert_eq!(STANDARD.decode(got["body"].as_str().unwrap()).unwrap(), b"hello run one");
    assert_eq!(got["from"], b);
    assert_eq!(got["from_job"], one.job.to_string());
    assert_eq!(ep.call("GET", "/messages", None, None).await.0, 401);
    assert_eq!(ep.call("GET", "/messages?wait=soon", Some(&t1), None).await.0, 400);

    // POST /subtasks, GET /subtasks/{task}/results
    let request = json!({"organizations": [b], "input": STANDARD.encode(r#"[{"op":"uid"}]"#)});
    let (s, subtask) = ep.call("POST", "/subtasks", Some(&t1), json_body(request.clone())).await;
    assert_eq!(s, 201, "{subtask}");
    let sub = subtask["task"].as_str().unwrap().to_owned();
    assert_eq!(ep.call("POST", "/subtasks", None, json_body(request)).await.0, 401);
    assert_eq!(
        ep.call("POST", "/subtasks", Some(&t1), json_body(json!({"organizations": "all"}))).await.0,
        400
    );
    let (s, results) = ep.call("GET", &format!("/subtasks/{sub}/results?wait=60"), Some(&t1), None).await;
    assert_eq!(s, 200, "{results}");
    assert_eq!(results["complete"], true, "{results}");
    assert_eq!(results["results"][0]["status"], "completed");
    let output = STANDARD.decode(results["results"][0]["output"].as_str().unwrap()).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&output).unwrap(), json!([65534]));
    assert_eq!(
        ep.call("GET", &format!("/subtasks/{sub}/results"), Some(&t2), None).await.0,
        404,
        "not its run"
    );
    assert_eq!(ep.call("GET", &format!("/subtasks/{sub}/results"), None, None).await.0, 401);
    assert_eq!(ep.call("GET", "/subtasks/nonsense/results", Some(&t1), None).await.0, 404);
    assert_eq!(ep.call("GET", &format!("/subtasks/{sub}/results?wait=x"), Some(&t1), None).await.0, 400);

    // POST /result
    let raw = Some(("application/octet-stream", b"result of one".to_vec()));
    assert_eq!(ep.call("POST", "/result", None, raw.clone()).await.0, 401);
    assert_eq!(
        ep.call("POST", "/result", Some(&t1), Some(("application/json", b"[]".to_vec()))).await.0,
        400
    );
    assert_eq!(ep.call("POST", "/result", Some(&t1), raw.clone()).await.0, 204);
    assert_eq!(ep.call("POST", "/result", Some(&t1), raw).await.0, 409, "a result is posted once");
    let posted = json_body(json!({"output": STANDARD.encode("result of two")}));
    assert_eq!(ep.call("POST", "/result", Some(&t2), posted).await.0, 204);

    // Unknown routes answer in the same JSON.
    let (s, body) = ep.call("GET", "/nothing", Some(&t1), None).await;
    assert_eq!((s, body["code"].as_str()), (404, Some("not_found")));

    // End both jobs; their tokens die with them, and what they posted reaches the researcher.
    for task in [one.task, two.task] {
        let (s, _) = fed.app.call("POST", &format!("/tasks/{task}/kill"), Some(&fed.researcher), None).await;
        assert_eq!(s, 200);
    }
    let result = fed.result(one.task).await;
    assert_eq!(result.status, JobStatus::Killed);
    assert_eq!(result.output.as_ref(), b"result of one");
    assert_eq!(fed.result(two.task).await.output.as_ref(), b"result of two");
    assert_eq!(ep.call("GET", "/job", Some(&t1), None).await.0, 401, "the token died with the job");
    fed.cleanup().await;
}
