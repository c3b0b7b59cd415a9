//! The endpoint's secure-sum routes (`POST /v1/secure-sum`, `GET /v1/secure-sum/{round}`): the
//! HTTP face of [`crate::secagg`].

use std::collections::HashMap;
use std::time::Duration;

use fedq_algorithm_api::{self as api, ErrorCode};
use warp::http::StatusCode;

use super::{
    Answer, Failure, authorize, fail, internal, ok_json, one_request, org_of, parse_json, sent_failure,
    wait_of,
};
use crate::ids::OrgId;
use crate::secagg::{self, Contribution, SumError};
use crate::shared::Core;

fn failure(e: SumError) -> Failure {
    let message = e.to_string();
    let code = match e {
        SumError::Send(e) => return sent_failure(e),
        SumError::Io(e) => return internal(e),
        SumError::Malformed(_) => ErrorCode::Malformed,
        SumError::TooFew { .. } | SumError::Disagree { .. } | SumError::WeakKey(_) => ErrorCode::Refused,
        SumError::NotInRun(_) => ErrorCode::NotInRun,
        SumError::AlreadyContributed(_) => ErrorCode::AlreadyPosted,
        SumError::Incomplete { .. } => ErrorCode::RoundIncomplete,
        SumError::Full => ErrorCode::TooLarge,
    };
    fail(code, message)
}

fn orgs(texts: &[String], what: &str) -> Result<Vec<OrgId>, Failure> {
    texts.iter().map(|t| org_of(t, what)).collect()
}

fn texts(orgs: &[OrgId]) -> Vec<String> {
    orgs.iter().map(OrgId::to_string).collect()
}

pub(super) async fn contribute(core: &Core, auth: Option<String>, body: &[u8]) -> Answer {
    let job = authorize(core, auth)?;
    let _permit = one_request(&job)?;
    let request: api::Contribute = parse_json(body)?;
    let (round, participants) =
        secagg::parse_round(&request.round, orgs(&request.participants, "a participant")?)
            .map_err(failure)?;
    let aggregator = org_of(&request.aggregator, "aggregator")?;
    let answer = api::Contributed { round: round.to_string(), participants: texts(participants.orgs()) };
    let wait = Duration::from_secs(request.wait.min(api::MAX_WAIT_SECS));
    let ask = Contribution { round, participants, aggregator, values: request.values, wait };
    secagg::contribute(core, &job, ask).await.map_err(failure)?;
    ok_json(StatusCode::ACCEPTED, &answer)
}

pub(super) async fn sum(
    core: &Core,
    auth: Option<String>,
    round: &str,
    query: HashMap<String, String>,
) -> Answer {
    let job = authorize(core, auth)?;
    let wait = wait_of(&query)?;
    let Some(listed) = query.get("participants") else {
        return Err(fail(
            ErrorCode::Malformed,
            "participants is the round's organizations, separated by commas",
        ));
    };
    let listed: Vec<String> = listed.split(',').map(str::to_owned).collect();
    let (round, participants) =
        secagg::parse_round(round, orgs(&listed, "a participant")?).map_err(failure)?;
    let sum = secagg::sum(core, &job, round.clone(), participants.clone(), wait).await.map_err(failure)?;
    ok_json(
        StatusCode::OK,
        &api::SecureSum { round: round.to_string(), participants: texts(participants.orgs()), sum },
    )
}
