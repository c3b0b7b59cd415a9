//! How the long-running roles (server, node) read their settings: a TOML file, then `FEDQ_…`
//! environment variables, `FEDQ_SECTION__KEY` overriding `[section] key`.

use std::path::Path;

use serde::de::DeserializeOwned;

/// Reads `path` (if given), then the environment, into `T`.
pub fn load<T: DeserializeOwned>(path: Option<&Path>) -> Result<T, config::ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = path {
        builder = builder.add_source(config::File::from(path).required(true));
    }
    with_environment(builder)
}

/// Reads `text` (TOML, as a settings file would hold it), then the environment, into `T`: what
/// a file would give before it is written.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, config::ConfigError> {
    let builder =
        config::Config::builder().add_source(config::File::from_str(text, config::FileFormat::Toml));
    with_environment(builder)
}

fn with_environment<T: DeserializeOwned>(
    builder: config::builder::ConfigBuilder<config::builder::DefaultState>,
) -> Result<T, config::ConfigError> {
    builder
        .add_source(
            config::Environment::with_prefix("FEDQ")
                .prefix_separator("_")
                .separator("__")
                .source(Some(setting_variables(std::env::vars()))),
        )
        .build()?
        .try_deserialize()
}

/// The variables that name a setting: `FEDQ_SECTION__KEY`. Others of the `FEDQ_` family are
/// the command line's own (`FEDQ_SESSION`, `FEDQ_KEY`, `FEDQ_TRUST_STORE`…) and are no setting:
/// read as one, they would make every settings file "invalid" in a shell that has them.
fn setting_variables(
    vars: impl Iterator<Item = (String, String)>,
) -> std::collections::HashMap<String, String> {
    vars.filter(|(name, _)| name.strip_prefix("FEDQ_").is_some_and(|rest| rest.contains("__"))).collect()
}

/// A list setting given either as a list (TOML) or as one comma-separated string (environment
/// variables: `FEDQ_BROKER__CLUSTER_HOSTS=b2:5672,b3:5672`). Empty entries are dropped.
pub fn comma_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Text(String),
    }
    let items = match <Either as serde::Deserialize>::deserialize(d)? {
        Either::List(items) => items,
        Either::Text(text) => text.split(',').map(str::to_owned).collect(),
    };
    Ok(items.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_section_variables_are_settings() {
        let vars =
            [("FEDQ_SESSION", "/tmp/s"), ("FEDQ_KEY", "k"), ("FEDQ_SERVER__API_KEY", "x"), ("PATH", "/bin")];
        let kept = super::setting_variables(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(kept.keys().collect::<Vec<_>>(), vec!["FEDQ_SERVER__API_KEY"]);
    }

    use super::comma_list;

    #[derive(serde::Deserialize)]
    struct Hosts {
        #[serde(deserialize_with = "comma_list")]
        hosts: Vec<String>,
    }

    #[test]
    fn lists_come_as_lists_or_comma_separated_text() {
        let list: Hosts = serde_json::from_str(r#"{"hosts": ["a:1", "b:2"]}"#).unwrap();
        let text: Hosts = serde_json::from_str(r#"{"hosts": "a:1, b:2,"}"#).unwrap();
        assert_eq!(list.hosts, ["a:1", "b:2"]);
        assert_eq!(text.hosts, ["a:1", "b:2"]);
    }
}
