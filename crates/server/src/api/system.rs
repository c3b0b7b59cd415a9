//! Health and the API's description.

use warp::http::StatusCode;

use super::{Response, reply};
use crate::app::State;

/// Whether the database and the broker answer.
pub async fn health(state: State) -> Response {
    let database = match state.db.get().await {
        Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    };
    let broker = state.broker.is_connected();
    let ok = database && broker;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok(reply(
        status,
        &serde_json::json!({
            "status": if ok { "ok" } else { "degraded" },
            "database": database,
            "broker": broker,
            "version": env!("CARGO_PKG_VERSION"),
        }),
    ))
}

/// The OpenAPI description of the API.
pub async fn openapi() -> Response {
    let spec: serde_json::Value =
        serde_json::from_str(OPENAPI).expect("docs/openapi.json is valid JSON (checked by a test)");
    Ok(reply(StatusCode::OK, &spec))
}

/// `docs/openapi.json`, compiled in.
pub const OPENAPI: &str = include_str!("../../../../docs/openapi.json");

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// (method, path) of every route in `routes()`, read from its source, parameters as `{}`.
    fn routes_in_source() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let mut routes = BTreeSet::new();
        let mut rest = source;
        while let Some(at) = rest.find("warp::path!(") {
            rest = &rest[at + "warp::path!(".len()..];
            let end = rest.find(')').expect("a path! macro closes");
            let path: String = rest[..end]
                .split('/')
                .map(|segment| {
                    let segment = segment.trim();
                    if segment.starts_with('"') {
                        segment.trim_matches('"').to_owned()
                    } else {
                        "{}".to_owned()
                    }
                })
                .fold(String::new(), |acc, s| format!("{acc}/{s}"));
            let method = ["get", "post", "put", "patch", "delete"]
                .iter()
                .filter_map(|m| rest.find(&format!("warp::{m}()")).map(|i| (i, *m)))
                .min()
                .expect("a route names its method")
                .1;
            routes.insert((method.to_owned(), path));
        }
        routes
    }

    #[test]
    fn the_openapi_description_lists_exactly_the_routes() {
        let spec: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("valid JSON");
        let mut documented = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            let normalized: String = path
                .split('/')
                .skip(1)
                .map(|s| if s.starts_with('{') { "{}" } else { s })
                .fold(String::new(), |acc, s| format!("{acc}/{s}"));
            for method in item.as_object().expect("path item").keys() {
                documented.insert((method.clone(), normalized.clone()));
            }
        }
        let routes = routes_in_source();
        assert_eq!(routes.len(), 39, "{routes:?}");
        assert_eq!(documented, routes);
    }

    #[test]
    fn the_openapi_error_codes_are_the_applications() {
        use crate::app::ErrorCode;
        let spec: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("valid JSON");
        let documented: BTreeSet<&str> = spec["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
            .as_array()
            .expect("the Error schema lists its codes")
            .iter()
            .map(|c| c.as_str().expect("a code is a string"))
            .collect();
        let codes: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(documented, codes);
    }

    /// The REST contract's types and the description's schemas name the same fields: an
    /// example of each type with every optional field set serializes to exactly the schema's
    /// properties.
    #[test]
    fn the_openapi_schemas_are_the_contract_types() {
        use crate::contract::*;
        use crate::ids::{CollaborationId, JobId, NodeId, OrgId, RunId, TaskId};
        use crate::protocol::JobStatus;
        use std::time::SystemTime;

        let spec: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("valid JSON");
        let job = Job {
            id: JobId::new(),
            organization: OrgId::new(),
            organization_name: "registry-a".into(),
            status: JobStatus::Running,
            status_changed_at: SystemTime::now(),
        };
        let task = Task {
            id: TaskId::new(),
            collaboration: CollaborationId::new(),
            run: RunId::new(),
            parent: Some(TaskId::new()),
            image: "fedq/secure-sum".into(),
            name: "count".into(),
            creator_organization: OrgId::new(),
            creator_user: Some(crate::ids::UserId::new()),
            creator_node: Some(NodeId::new()),
            created_at: SystemTime::now(),
            jobs: vec![job.clone()],
        };
        let node = Node {
            id: NodeId::new(),
            organization: OrgId::new(),
            name: "n1".into(),
            broker_user: "fedq-node-1".into(),
            version: Some("0.1.0".into()),
            last_seen_at: Some(SystemTime::now()),
            online: true,
            revoked_at: Some(SystemTime::now()),
            policy: Some(Default::default()),
            transparency: Some(Default::default()),
        };
        let broker = BrokerAccess {
            url: "amqps://broker:5671".into(),
            vhost: "fedq".into(),
            username: "fedq-node-1".into(),
            password: ShownOnce::new("secret"),
            queue: "fedq.org.x".into(),
            exchange: "fedq.ingress".into(),
            server_user: "fedq-server".into(),
            ca_pem: Some("-----BEGIN CERTIFICATE-----".into()),
        };
        let organization =
            EnrolledOrganization { id: OrgId::new(), name: "registry-a".into(), public_key: None };
        let registration = NodeRegistration {
            node: node.clone(),
            api_key: ShownOnce::new("fedq_n_x"),
            broker: broker.clone(),
            organization: Some(organization.clone()),
        };
        let new_job = NewJob { id: JobId::new(), organization: OrgId::new(), envelope: "AA==".into() };
        let create = CreateTask {
            id: TaskId::new(),
            run: RunId::new(),
            collaboration: CollaborationId::new(),
            image: "fedq/secure-sum".into(),
            name: "count".into(),
            parent: Some(TaskId::new()),
            jobs: vec![new_job.clone()],
        };
        let result = SealedResult {
            job: JobId::new(),
            organization: OrgId::new(),
            status: JobStatus::Completed,
            envelope: "AA==".into(),
        };
        let results = TaskResults { complete: true, results: vec![result.clone()] };
        let error = ErrorBody {
            code: "envelope_refused".into(),
            message: "no".into(),
            reason: Some("malformed".into()),
        };
        let dead_letter = DeadLetter {
            message_id: Some("00".repeat(16)),
            reason_code: "not_a_member".into(),
            reason: "the sender is not a member".into(),
            kind: Some("run_message".into()),
            sender: Some(OrgId::new()),
            recipient: Some(OrgId::new()),
            task: Some(TaskId::new()),
            publisher: Some("fedq-node-1".into()),
            size: 2054,
            received_at: SystemTime::now(),
        };
        let user = User {
            id: crate::ids::UserId::new(),
            organization: Some(OrgId::new()),
            username: "ada".into(),
            role: Role::Researcher,
        };
        let listed = Organization {
            id: OrgId::new(),
            name: "registry-a".into(),
            public_key: Some("fedq-pk1:x".into()),
            fingerprint: Some("SHA256:00".into()),
        };
        let collaboration = Collaboration {
            id: CollaborationId::new(),
            name: "counts".into(),
            organizations: vec![OrgId::new()],
        };
        let login = LoginAnswer { token: ShownOnce::new("fedq_u_x"), expires_at_ms: 1, user: user.clone() };
        // `Me` is one of the two, untagged: each side reads back as itself.
        for me in [Me::User(user.clone()), Me::Node(node.clone())] {
            let json = serde_json::to_value(&me).unwrap();
            assert_eq!(serde_json::from_value::<Me>(json).unwrap(), me);
        }
        let examples: Vec<(&str, serde_json::Value)> = vec![
            ("User", serde_json::to_value(&user).unwrap()),
            ("Organization", serde_json::to_value(&listed).unwrap()),
            ("Collaboration", serde_json::to_value(&collaboration).unwrap()),
            ("LoginAnswer", serde_json::to_value(&login).unwrap()),
            // The request bodies, every optional field given.
            (
                "Login",
                serde_json::to_value(Login { username: "ada".into(), password: Credential::new("pw") })
                    .unwrap(),
            ),
            (
                "CreateUser",
                serde_json::to_value(CreateUser {
                    username: "ada".into(),
                    password: Credential::new("pw"),
                    role: Role::Researcher,
                    organization: Some(OrgId::new()),
                })
                .unwrap(),
            ),
            ("SetRole", serde_json::to_value(SetRole { role: Role::Viewer }).unwrap()),
            (
                "CreateOrganization",
                serde_json::to_value(CreateOrganization {
                    name: "registry-a".into(),
                    public_key: Some("fedq-pk1:x".into()),
                })
                .unwrap(),
            ),
            (
                "PublishKey",
                serde_json::to_value(PublishKey {
                    public_key: "fedq-pk1:x".into(),
                    rotation_signature: Some("AA==".into()),
                })
                .unwrap(),
            ),
            (
                "CreateCollaboration",
                serde_json::to_value(CreateCollaboration {
                    name: "counts".into(),
                    organizations: vec![OrgId::new()],
                })
                .unwrap(),
            ),
            (
                "CreateNode",
                serde_json::to_value(CreateNode { organization: OrgId::new(), name: "n".into() }).unwrap(),
            ),
            (
                "CreateEnrollment",
                serde_json::to_value(CreateEnrollment { node_name: "n".into(), valid_secs: Some(60) })
                    .unwrap(),
            ),
            ("Enroll", serde_json::to_value(Enroll { token: Credential::new("t") }).unwrap()),
            ("Task", serde_json::to_value(&task).unwrap()),
            ("Job", serde_json::to_value(&job).unwrap()),
            ("Node", serde_json::to_value(&node).unwrap()),
            ("BrokerCredentials", serde_json::to_value(&broker).unwrap()),
            ("EnrolledOrganization", serde_json::to_value(&organization).unwrap()),
            ("NodeRegistration", serde_json::to_value(&registration).unwrap()),
            ("NewJob", serde_json::to_value(&new_job).unwrap()),
            ("CreateTask", serde_json::to_value(&create).unwrap()),
            ("Result", serde_json::to_value(&result).unwrap()),
            ("Results", serde_json::to_value(&results).unwrap()),
            ("Error", serde_json::to_value(&error).unwrap()),
            ("DeadLetter", serde_json::to_value(&dead_letter).unwrap()),
            (
                "LogKey",
                serde_json::to_value(LogKey { algorithm: "Ed25519".into(), public_key: "00".into() })
                    .unwrap(),
            ),
            (
                "TreeHead",
                serde_json::to_value(TreeHeadBody {
                    size: 1,
                    root: "00".into(),
                    timestamp_ms: 1,
                    signature: "00".into(),
                })
                .unwrap(),
            ),
            (
                "InclusionProof",
                serde_json::to_value(InclusionProofBody { leaf_index: 0, tree_size: 1, path: vec![] })
                    .unwrap(),
            ),
            (
                "ConsistencyProof",
                serde_json::to_value(ConsistencyProofBody { from: 0, to: 1, path: vec![] }).unwrap(),
            ),
            (
                "LogEntry",
                // Both optional fields set, so that the shape is compared whole (an entry has one).
                serde_json::to_value(LogEntry {
                    index: 0,
                    leaf: Some("01".into()),
                    leaf_hash: Some("00".repeat(32)),
                })
                .unwrap(),
            ),
        ];
        for (name, example) in examples {
            let schema = &spec["components"]["schemas"][name];
            let properties: BTreeSet<&str> = schema["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("schema {name}"))
                .keys()
                .map(String::as_str)
                .collect();
            let fields: BTreeSet<&str> =
                example.as_object().expect("an object").keys().map(String::as_str).collect();
            assert_eq!(fields, properties, "schema {name}");
            for required in schema["required"].as_array().into_iter().flatten() {
                assert!(fields.contains(required.as_str().unwrap()), "{name}.{required} is required");
            }
        }
    }
}
