//! The types against the shared examples and the documentation's table of errors.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::*;

const EXAMPLES: &str = include_str!("../examples.json");
const GUIDE: &str = include_str!("../../../docs/algorithm-api.md");

fn examples() -> Value {
    serde_json::from_str(EXAMPLES).expect("examples.json is JSON")
}

/// `value` read as `T` and written back is `value` again: no field of the example is unknown to
/// the type, and none of the type's is missing from it.
fn round_trips<T: Serialize + DeserializeOwned>(route: &str, part: &str, value: &Value) {
    let typed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{route}'s {part} does not read: {e}"));
    assert_eq!(&serde_json::to_value(&typed).unwrap(), value, "{route}'s {part} does not write back");
}

#[test]
fn every_example_reads_and_writes_back_through_its_type() {
    let examples = examples();
    let routes = examples["routes"].as_object().expect("routes");
    let mut checked = Vec::new();
    for (route, example) in routes {
        let request = example.get("request");
        let answer = example.get("answer");
        match route.as_str() {
            "job" => round_trips::<Job>(route, "answer", answer.unwrap()),
            "organizations" => round_trips::<Organizations>(route, "answer", answer.unwrap()),
            "send" => {
                round_trips::<SendMessage>(route, "request", request.unwrap());
                round_trips::<Sent>(route, "answer", answer.unwrap());
            }
            "receive" => round_trips::<Messages>(route, "answer", answer.unwrap()),
            "create_subtask" => {
                round_trips::<CreateSubtask>(route, "request", request.unwrap());
                round_trips::<Subtask>(route, "answer", answer.unwrap());
            }
            "subtask_results" => round_trips::<SubtaskResults>(route, "answer", answer.unwrap()),
            "post_result" => round_trips::<PostResult>(route, "request", request.unwrap()),
            "contribute" => {
                round_trips::<Contribute>(route, "request", request.unwrap());
                round_trips::<Contributed>(route, "answer", answer.unwrap());
            }
            "secure_sum" => round_trips::<SecureSum>(route, "answer", answer.unwrap()),
            other => panic!("an example of a route this crate has no type for: {other}"),
        }
        checked.push(route.as_str());
    }
    checked.sort_unstable();
    let every = [
        "contribute",
        "create_subtask",
        "job",
        "organizations",
        "post_result",
        "receive",
        "secure_sum",
        "send",
        "subtask_results",
    ];
    assert_eq!(checked, every, "every route has its example");
}

#[test]
fn the_examples_list_exactly_the_error_codes_with_their_statuses() {
    let mut listed: Vec<(String, u64)> = examples()["errors"]
        .as_object()
        .expect("errors")
        .iter()
        .map(|(code, status)| (code.clone(), status.as_u64().expect("a status")))
        .collect();
    let mut ours: Vec<(String, u64)> =
        ErrorCode::ALL.iter().map(|c| (c.as_str().to_owned(), u64::from(c.status()))).collect();
    listed.sort();
    ours.sort();
    assert_eq!(listed, ours);
}

#[test]
fn the_guide_tables_exactly_the_error_codes_with_their_statuses() {
    let start = GUIDE.find("## Errors").expect("an Errors section");
    let mut documented: Vec<(String, u16)> = GUIDE[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .flat_map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let status: u16 = cells[1].parse().expect("a status in the first column");
            cells[2]
                .split('`')
                .skip(1)
                .step_by(2)
                .map(move |code| (code.to_owned(), status))
                .collect::<Vec<_>>()
        })
        .collect();
    documented.sort();
    let mut ours: Vec<(String, u16)> =
        ErrorCode::ALL.iter().map(|c| (c.as_str().to_owned(), c.status())).collect();
    ours.sort();
    assert_eq!(documented, ours);
}

#[test]
fn every_code_reads_back_and_an_error_body_tells_a_known_code() {
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
    }
    assert_eq!(ErrorBody::new(ErrorCode::NotInRun, "x").code(), Some(ErrorCode::NotInRun));
    let newer = ErrorBody { code: "a_code_from_the_future".into(), message: String::new() };
    assert_eq!(newer.code(), None);
}
