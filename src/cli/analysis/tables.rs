//! The analyses' outputs as text tables, like statsmodels' and lifelines' summaries.

use std::fmt::Write as _;

use serde_json::Value;

/// Columns of text, right-aligned but the first.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - cell.chars().count();
            match i {
                0 => out.push_str(&format!("{cell}{}", " ".repeat(pad))),
                _ => out.push_str(&format!("  {}{cell}", " ".repeat(pad))),
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// A number as statsmodels prints one: 4 significant decimals, scientific when tiny or huge.
fn number(value: &Value) -> String {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e7) {
                format!("{x:.4e}")
            } else {
                format!("{x:.4}")
            }
        }
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A matrix with its rows' and its columns' labels (a crosstab, a correlation matrix).
fn labelled_matrix(rows: &Value, columns: &Value, matrix: &Value) -> String {
    let labels = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().map(|l| l.as_str().unwrap_or("").to_owned()).collect()
    };
    let columns = labels(columns);
    let mut header = vec![""];
    header.extend(columns.iter().map(String::as_str));
    let body: Vec<Vec<String>> = labels(rows)
        .into_iter()
        .zip(matrix.as_array().into_iter().flatten())
        .map(|(label, line)| {
            let mut row = vec![label];
            row.extend(line.as_array().into_iter().flatten().map(number));
            row
        })
        .collect();
    table(&header, &body)
}

fn coefficients(out: &Value, statistic: &str) -> String {
    let rows: Vec<Vec<String>> = out["coefficients"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or_default().to_owned();
            [name].into_iter().chain(["coef", "se", statistic, "p"].iter().map(|k| number(&c[*k]))).collect()
        })
        .collect();
    let p = format!("P>|{statistic}|");
    table(&["", "coef", "std err", statistic, &p], &rows)
}

fn facts(out: &Value, keys: &[&str]) -> String {
    let mut text = String::new();
    for key in keys {
        if let Some(value) = out.get(*key) {
            let _ = writeln!(text, "{key:<14} {}", number(value));
        }
    }
    text
}

/// The text of analysis `name`'s output.
pub fn render(name: &str, out: &Value) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "{name} over {} organizations\n", number(&out["organizations"]));
    // A vertical analysis's output has the shape of its horizontal namesake's.
    match name.strip_prefix("vertical_").unwrap_or(name) {
        "summary" => {
            let columns = out["columns"].as_object().cloned().unwrap_or_default();
            let quantiles: Vec<String> = columns
                .values()
                .filter_map(|c| c["quantiles"].as_object())
                .flat_map(|q| q.keys().cloned())
                .fold(Vec::new(), |mut seen, q| {
                    if !seen.contains(&q) {
                        seen.push(q);
                    }
                    seen
                });
            let mut header = vec!["", "count", "missing", "mean", "std", "variance"];
            header.extend(quantiles.iter().map(String::as_str));
            let rows: Vec<Vec<String>> = columns
                .iter()
                .map(|(column, c)| {
                    let mut row = vec![column.clone()];
                    row.extend(
                        ["count", "missing", "mean", "std", "variance"].iter().map(|k| number(&c[*k])),
                    );
                    row.extend(quantiles.iter().map(|q| number(&c["quantiles"][q])));
                    row
                })
                .collect();
            text.push_str(&table(&header, &rows));
        }
        "crosstab" => {
            text.push_str(&labelled_matrix(&out["row_levels"], &out["column_levels"], &out["table"]));
            let _ = writeln!(
                text,
                "\nmissing {}, excluded {}",
                number(&out["missing"]),
                number(&out["excluded"])
            );
            if out["test"].is_object() {
                let _ = writeln!(
                    text,
                    "chi2 {} (dof {}{}), p {}",
                    number(&out["test"]["chi2"]),
                    number(&out["test"]["dof"]),
                    if out["test"]["correction"] == true { ", Yates' correction" } else { "" },
                    number(&out["test"]["p"])
                );
            }
        }
        "correlation" => {
            text.push_str(&labelled_matrix(&out["columns"], &out["columns"], &out["matrix"]));
            let _ = writeln!(text, "\nn {}", number(&out["n"]));
        }
        "linear" => {
            text.push_str(&coefficients(out, "t"));
            text.push('\n');
            text.push_str(&facts(out, &["n", "df_resid", "r2", "adj_r2", "rss"]));
        }
        "cox" => {
            text.push_str(&coefficients(out, "z"));
            text.push('\n');
            text.push_str(&facts(out, &["ties", "n", "events", "log_likelihood", "iterations", "converged"]));
        }
        "glm" => {
            text.push_str(&coefficients(out, "z"));
            text.push('\n');
            text.push_str(&facts(
                out,
                &["family", "n", "deviance", "null_deviance", "llf", "aic", "iterations", "converged"],
            ));
        }
        "kaplan_meier" => {
            for (group, curve) in out["curves"].as_object().into_iter().flatten() {
                let _ = writeln!(
                    text,
                    "{group}: {} rows, {} events",
                    number(&curve["n"]),
                    number(&curve["events"])
                );
                let keys = ["time", "at_risk", "observed", "survival", "ci_lower", "ci_upper"];
                let len = curve["time"].as_array().map_or(0, Vec::len);
                let rows: Vec<Vec<String>> =
                    (0..len).map(|i| keys.iter().map(|k| number(&curve[*k][i])).collect()).collect();
                text.push_str(&table(&keys, &rows));
                text.push('\n');
            }
            if out["logrank"].is_object() {
                let test = &out["logrank"];
                let _ = writeln!(
                    text,
                    "log-rank chi2 {} (dof {}), p {}",
                    number(&test["chi2"]),
                    number(&test["dof"]),
                    number(&test["p"])
                );
            }
        }
        _ => text.push_str(&serde_json::to_string_pretty(out).unwrap_or_default()),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cox_model_and_a_vertical_regression_print_as_their_namesakes() {
        let cox = json!({"organizations": 3, "ties": "efron", "n": 50, "events": 30, "log_likelihood": -81.5,
            "coefficients": [{"name": "age", "coef": 0.04, "se": 0.01, "z": 4.0, "p": 6.3e-5}]});
        let text = render("cox", &cox);
        assert!(
            text.contains("P>|z|") && text.contains("log_likelihood") && text.contains("efron"),
            "{text}"
        );
        let vertical = json!({"organizations": 3, "n": 9, "coefficients": [
            {"name": "Intercept", "coef": 1.0, "se": 0.5, "t": 2.0, "p": 0.08}]});
        let text = render("vertical_linear", &vertical);
        assert!(text.starts_with("vertical_linear over 3 organizations") && text.contains("P>|t|"), "{text}");
    }

    #[test]
    fn a_model_prints_as_a_coefficient_table() {
        let out = json!({"organizations": 3, "n": 100, "r2": 0.25, "coefficients": [
            {"name": "Intercept", "coef": 1.5, "se": 0.25, "t": 6.0, "p": 1.2e-8},
            {"name": "age", "coef": -0.0123, "se": 0.001, "t": -12.3, "p": 0.0}]});
        let text = render("linear", &out);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["linear", "over", "3", "organizations"], "{text}");
        assert_eq!(lines[2], ["coef", "std", "err", "t", "P>|t|"], "{text}");
        assert!(lines.contains(&vec!["Intercept", "1.5000", "0.2500", "6.0000", "1.2000e-8"]), "{text}");
        assert!(lines.contains(&vec!["age", "-0.0123", "0.0010", "-12.3000", "0.0000"]), "{text}");
        assert!(lines.contains(&vec!["r2", "0.2500"]), "{text}");
    }

    #[test]
    fn a_crosstab_and_a_correlation_matrix_print_with_their_labels() {
        let crosstab = json!({"organizations": 3, "row_levels": ["no", "yes"], "column_levels": ["0", "1"],
            "table": [[10, 2], [3, 4]], "missing": 1, "excluded": 0,
            "test": {"chi2": 2.5, "dof": 1, "correction": true, "p": 0.11}});
        let text = render("crosstab", &crosstab);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert!(lines.contains(&vec!["0", "1"]) && lines.contains(&vec!["no", "10", "2"]), "{text}");
        assert!(text.contains("chi2 2.5000 (dof 1, Yates' correction), p 0.1100"), "{text}");
        let correlation = json!({"organizations": 3, "columns": ["age", "bmi"], "n": 9,
            "matrix": [[1.0, 0.5], [0.5, 1.0]]});
        let text = render("correlation", &correlation);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert!(
            lines.contains(&vec!["age", "bmi"]) && lines.contains(&vec!["bmi", "0.5000", "1.0000"]),
            "{text}"
        );
    }
}
