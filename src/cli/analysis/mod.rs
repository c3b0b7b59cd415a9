//! `fedq analysis <name>`: the statistics of docs/algorithms.md ("Analyses on secure
//! aggregation"), run in the shipped analysis image at the registries and printed as tables (or
//! JSON). The first organization given aggregates: list your own first if it has a node.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Map, Value, json};

use super::CliError;
use super::research::{identity, resolve_collaboration, resolve_organizations, session_client};
use crate::client::{Inputs, TaskSpec};
use crate::ids::OrgId;
use crate::protocol::JobStatus;

mod tables;

/// The image the analyses run in, as `scripts/images` builds it.
pub const IMAGE: &str = "fedq/python-analysis:0.1.0";

/// Which analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Name {
    /// Count, missing, mean, variance, standard deviation (and quantiles from a histogram).
    Summary,
    /// A table of two categorical columns with the χ² test.
    Crosstab,
    /// Pearson correlations.
    Correlation,
    /// Ordinary least squares.
    Linear,
    /// Logistic or Poisson regression by IRLS.
    Glm,
    /// Kaplan–Meier curves and the log-rank test.
    KaplanMeier,
    /// Cox proportional hazards (Efron's ties, or `--arguments '{"ties": "breslow"}'`).
    Cox,
    /// Over vertically partitioned columns (`--party-a`, `--party-b`, three `--org`: A, B and
    /// the dealer): count, missing, sum, mean, variance, standard deviation.
    VerticalSummary,
    /// Over vertically partitioned columns: A's column against B's, with the χ² test.
    VerticalCrosstab,
    /// Over vertically partitioned columns: Pearson correlations of A's and B's columns.
    VerticalCorrelation,
    /// Over vertically partitioned columns: ordinary least squares on A's and B's covariates.
    VerticalLinear,
}

impl Name {
    fn as_str(self) -> &'static str {
        match self {
            Name::Summary => "summary",
            Name::Crosstab => "crosstab",
            Name::Correlation => "correlation",
            Name::Linear => "linear",
            Name::Glm => "glm",
            Name::KaplanMeier => "kaplan_meier",
            Name::Cox => "cox",
            Name::VerticalSummary => "vertical_summary",
            Name::VerticalCrosstab => "vertical_crosstab",
            Name::VerticalCorrelation => "vertical_correlation",
            Name::VerticalLinear => "vertical_linear",
        }
    }

    fn is_vertical(self) -> bool {
        matches!(
            self,
            Name::VerticalSummary | Name::VerticalCrosstab | Name::VerticalCorrelation | Name::VerticalLinear
        )
    }
}

/// `fedq analysis`.
#[derive(Debug, Args)]
pub struct AnalysisArgs {
    /// The analysis.
    #[arg(value_enum)]
    name: Name,
    /// The collaboration (name or id).
    #[arg(long)]
    collaboration: String,
    /// A registry to run at (name or id); repeat it. The first aggregates; for a vertical
    /// analysis, the first two hold the data and the third deals and combines.
    #[arg(long = "org", required = true)]
    organizations: Vec<String>,
    /// Your organization's private key file.
    #[arg(long, env = "FEDQ_KEY")]
    key: PathBuf,
    /// The data source's label at every node (not for a vertical analysis: each party's part
    /// names its own).
    #[arg(long)]
    data: Option<String>,
    /// A vertical analysis's first data party's part, a JSON object: its `data`, `where` and
    /// `columns` (`column` and `levels` for a crosstab, `covariates` or `outcome` for a
    /// regression).
    #[arg(long = "party-a")]
    party_a: Option<String>,
    /// The second data party's part, as `--party-a`.
    #[arg(long = "party-b")]
    party_b: Option<String>,
    /// A filter every node applies first (pandas query syntax: `age > 50 and sex == 'F'`).
    #[arg(long = "where")]
    filter: Option<String>,
    /// Columns (summary, correlation); for a crosstab, its columns' variable.
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    /// A crosstab's rows' variable.
    #[arg(long)]
    rows: Option<String>,
    /// A categorical column's levels, COLUMN=a,b,…; repeat per column (crosstab, groups).
    #[arg(long = "levels", value_parser = parse_levels)]
    levels: Vec<(String, Vec<String>)>,
    /// A histogram for a column's quantiles, COLUMN=MIN:MAX:BINS (summary).
    #[arg(long = "histogram", value_parser = parse_histogram)]
    histograms: Vec<(String, Value)>,
    /// A regression's outcome.
    #[arg(long)]
    outcome: Option<String>,
    /// A regression's covariates.
    #[arg(long, value_delimiter = ',')]
    covariates: Vec<String>,
    /// A GLM's family: logistic or poisson.
    #[arg(long)]
    family: Option<String>,
    /// Survival (Kaplan–Meier, Cox): the time column, the event column (1 event, 0
    /// censored), the group column.
    #[arg(long)]
    time: Option<String>,
    #[arg(long)]
    #[allow(missing_docs)]
    event: Option<String>,
    #[arg(long)]
    #[allow(missing_docs)]
    group: Option<String>,
    /// Survival: the longest time, and the unit times are counted in (1).
    #[arg(long)]
    max_time: Option<f64>,
    #[arg(long)]
    #[allow(missing_docs)]
    unit: Option<f64>,
    /// Any other argument of the analysis, as a JSON object merged into its input.
    #[arg(long)]
    arguments: Option<String>,
    /// Another build of the analysis image.
    #[arg(long, default_value = IMAGE)]
    image: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Print the aggregator's output as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_levels(text: &str) -> Result<(String, Vec<String>), String> {
    let (column, levels) = text.split_once('=').ok_or("expected COLUMN=a,b,…")?;
    Ok((column.to_owned(), levels.split(',').map(str::to_owned).collect()))
}

fn parse_histogram(text: &str) -> Result<(String, Value), String> {
    let (column, range) = text.split_once('=').ok_or("expected COLUMN=MIN:MAX:BINS")?;
    let parts: Vec<f64> =
        range.split(':').map(str::parse).collect::<Result<_, _>>().map_err(|_| "expected numbers")?;
    match parts[..] {
        [min, max, bins] => Ok((column.to_owned(), json!({"min": min, "max": max, "bins": bins as u64}))),
        _ => Err("expected COLUMN=MIN:MAX:BINS".into()),
    }
}

/// A JSON object given as `flag`'s value.
fn object(flag: &str, text: Option<&String>) -> Result<Value, CliError> {
    let text = text.ok_or_else(|| CliError::BadInput(format!("{flag} is required: a JSON object")))?;
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => Ok(Value::Object(object)),
        Ok(_) => Err(CliError::BadInput(format!("{flag} is a JSON object"))),
        Err(e) => Err(CliError::BadInput(format!("{flag} is not JSON: {e}"))),
    }
}

/// The analysis's input, as `docs/algorithms.md` lists it.
fn input(args: &AnalysisArgs) -> Result<Value, CliError> {
    let mut spec = Map::new();
    spec.insert("analysis".into(), args.name.as_str().into());
    if args.name.is_vertical() {
        if args.data.is_some() || args.filter.is_some() {
            return Err(CliError::BadInput(
                "a vertical analysis takes each party's data and filter in --party-a and --party-b, not --data or --where"
                    .into(),
            ));
        }
        spec.insert("a".into(), object("--party-a", args.party_a.as_ref())?);
        spec.insert("b".into(), object("--party-b", args.party_b.as_ref())?);
        if let Some(text) = &args.arguments {
            let Value::Object(more) = object("--arguments", Some(text))? else { unreachable!("an object") };
            spec.extend(more);
        }
        return Ok(Value::Object(spec));
    }
    let data = args.data.clone().ok_or_else(|| {
        CliError::BadInput(format!(
            "--data is required: the data source's label at every node of {}",
            args.name.as_str()
        ))
    })?;
    spec.insert("data".into(), data.into());
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            spec.insert(key.into(), value);
        }
    };
    put("where", args.filter.clone().map(Value::from));
    let columns = (!args.columns.is_empty()).then(|| json!(args.columns));
    match args.name {
        Name::Crosstab => put("columns", args.columns.first().cloned().map(Value::from)),
        _ => put("columns", columns),
    }
    put("rows", args.rows.clone().map(Value::from));
    let levels: Map<String, Value> = args.levels.iter().map(|(c, l)| (c.clone(), json!(l))).collect();
    put("levels", (!levels.is_empty()).then_some(Value::Object(levels)));
    let histograms: Map<String, Value> = args.histograms.iter().cloned().collect();
    put("histogram", (!histograms.is_empty()).then_some(Value::Object(histograms)));
    put("outcome", args.outcome.clone().map(Value::from));
    put("covariates", (!args.covariates.is_empty()).then(|| json!(args.covariates)));
    put("family", args.family.clone().map(Value::from));
    put("time", args.time.clone().map(Value::from));
    put("event", args.event.clone().map(Value::from));
    put("group", args.group.clone().map(Value::from));
    put("max_time", args.max_time.map(Value::from));
    put("unit", args.unit.map(Value::from));
    if let Some(text) = &args.arguments {
        let Value::Object(more) = serde_json::from_str(text)
            .map_err(|e| CliError::BadInput(format!("--arguments is not JSON: {e}")))?
        else {
            return Err(CliError::BadInput("--arguments is a JSON object".into()));
        };
        spec.extend(more);
    }
    Ok(Value::Object(spec))
}

/// Runs `fedq analysis`.
pub fn analysis(args: AnalysisArgs) -> Result<(), CliError> {
    super::runtime()?.block_on(run(args))
}

async fn run(args: AnalysisArgs) -> Result<(), CliError> {
    let client = session_client()?;
    let me = client.me().await?;
    let org = me.organization().ok_or(CliError::NoOrganization)?;
    let me_id = identity(&args.key, org)?;
    let spec = input(&args)?;
    let collaboration = resolve_collaboration(&client, &args.collaboration).await?;
    let organizations = resolve_organizations(&client, &args.organizations).await?;
    let task = TaskSpec {
        collaboration,
        image: args.image.clone(),
        organizations: organizations.clone(),
        inputs: Inputs::Same(spec.to_string().into_bytes()),
        name: format!("analysis {}", args.name.as_str()),
        return_log: false,
    };
    let created = client.create_task(&me_id, &task).await?;
    eprintln!(
        "task {} created: {} at {} organization(s)",
        created.task,
        args.name.as_str(),
        organizations.len()
    );
    let look = client.wait(created.task, Duration::from_secs(args.timeout), |_| {}).await?;
    let opened = client.open_results(&me_id, collaboration, &look.results).await?;
    let orgs = client.organizations().await.unwrap_or_default();
    let name =
        |id: OrgId| orgs.iter().find(|o| o.id == id).map_or_else(|| id.to_string(), |o| o.name.clone());
    if !look.complete {
        let pending = organizations.iter().filter(|o| !opened.iter().any(|r| r.organization == **o));
        let pending = pending.map(|o| name(*o)).collect();
        return Err(CliError::Incomplete { task: created.task, waited_secs: args.timeout, pending });
    }
    let mut reasons = Vec::new();
    for result in opened.iter().filter(|r| r.status != JobStatus::Completed) {
        // The analysis posts its reason before it fails; a job that never ran has the node's.
        let output: Value = serde_json::from_slice(&result.output).unwrap_or(Value::Null);
        let why = output["error"]["message"].as_str().map(str::to_owned).or_else(|| result.reason.clone());
        let code = output["error"]["code"].as_str().map(|c| format!(" ({c})")).unwrap_or_default();
        let why = why.unwrap_or_else(|| result.status.to_string());
        reasons.push(format!("{}: {why}{code}", name(result.organization)));
    }
    if !reasons.is_empty() {
        return Err(CliError::AnalysisFailed { analysis: args.name.as_str(), reasons });
    }
    // The aggregator's output, wherever `--arguments '{"aggregator": …}'` put it: the others
    // only say that they contributed.
    let outputs: Vec<Value> = opened
        .iter()
        .map(|r| serde_json::from_slice(&r.output))
        .collect::<Result<_, _>>()
        .map_err(|e| CliError::BadInput(format!("an organization's output is not JSON: {e}")))?;
    let output =
        outputs.iter().find(|o| o["contributed"] != true).cloned().unwrap_or_else(|| outputs[0].clone());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&output).expect("JSON prints"));
    } else {
        print!("{}", tables::render(args.name.as_str(), &output));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: AnalysisArgs,
    }

    fn input_of(line: &[&str]) -> Result<Value, CliError> {
        let base = ["fedq", "--collaboration", "c", "--org", "a", "--key", "k"];
        input(&Command::try_parse_from(base.iter().chain(line)).unwrap().args)
    }

    #[test]
    fn a_vertical_analysis_takes_each_party_s_part_and_no_data_label() {
        let spec = input_of(&[
            "vertical-linear",
            "--party-a",
            r#"{"data": "ages", "covariates": ["age"]}"#,
            "--party-b",
            r#"{"data": "labs", "outcome": "bmi"}"#,
            "--arguments",
            r#"{"timeout": 30}"#,
        ])
        .unwrap();
        assert_eq!(
            spec,
            json!({"analysis": "vertical_linear", "a": {"data": "ages", "covariates": ["age"]},
                   "b": {"data": "labs", "outcome": "bmi"}, "timeout": 30})
        );
        let missing = input_of(&["vertical-summary", "--party-a", "{}"]).unwrap_err();
        assert!(missing.to_string().contains("--party-b is required"), "{missing}");
        let not_object = input_of(&["vertical-summary", "--party-a", "[]", "--party-b", "{}"]).unwrap_err();
        assert!(not_object.to_string().contains("--party-a is a JSON object"), "{not_object}");
    }

    #[test]
    fn a_horizontal_analysis_needs_its_data_label() {
        let error = input_of(&["summary", "--columns", "age"]).unwrap_err();
        assert!(error.to_string().contains("--data is required"), "{error}");
        let spec = input_of(&["summary", "--data", "patients", "--columns", "age"]).unwrap();
        assert_eq!(spec, json!({"analysis": "summary", "data": "patients", "columns": ["age"]}));
    }
}
