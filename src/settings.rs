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
    builder
        .add_source(config::Environment::with_prefix("FEDQ").prefix_separator("_").separator("__"))
        .build()?
        .try_deserialize()
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
