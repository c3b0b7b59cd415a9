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
    /// Every key of the settings structs has a row in docs/settings.md, and every row names a
    /// key: the reference cannot drift from the code. Fields are read from the source, as the
    /// structs' serde names are their field names.
    #[test]
    fn the_settings_reference_lists_exactly_the_keys() {
        let sources = [
            include_str!("server/config.rs"),
            include_str!("node/config.rs"),
            include_str!("tls/mod.rs"),
            include_str!("metrics.rs"),
        ];
        let mut structs = std::collections::HashMap::new();
        for source in sources {
            for chunk in source.split("\npub struct ").skip(1) {
                let name = chunk.split([' ', '<']).next().unwrap_or_default().to_owned();
                let body = chunk.split("\n}").next().unwrap_or_default();
                let fields: Vec<(String, String)> = body
                    .lines()
                    .filter_map(|l| l.strip_prefix("    pub "))
                    .filter_map(|l| l.split_once(": "))
                    .map(|(f, t)| (f.to_owned(), t.trim_end_matches(',').to_owned()))
                    .collect();
                structs.insert(name, fields);
            }
        }
        fn keys(
            structs: &std::collections::HashMap<String, Vec<(String, String)>>,
            root: &str,
            prefix: &str,
            out: &mut std::collections::BTreeSet<String>,
        ) {
            for (field, ty) in &structs[root] {
                let key = format!("{prefix}{field}");
                let inner = ty
                    .trim_start_matches("Option<")
                    .trim_start_matches("Vec<")
                    .trim_end_matches('>')
                    .rsplit("::")
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                if inner == "ClientTls" {
                    out.insert(key); // documented once, as the `tls` table
                } else if ty.starts_with("BTreeMap<String") {
                    out.insert(format!("{key}.<label>"));
                } else if structs.contains_key(&inner) && inner != "MetricsSection" {
                    if ty.starts_with("Vec<") {
                        out.insert(key.clone());
                    }
                    keys(structs, &inner, &format!("{key}."), out);
                } else if inner == "MetricsSection" {
                    out.insert("metrics.listen".to_owned());
                } else {
                    out.insert(key);
                }
            }
        }
        let doc = include_str!("../docs/settings.md");
        let rows = |section: &str| -> std::collections::BTreeSet<String> {
            let part = doc.split("\n## ").find(|p| p.starts_with(section)).unwrap_or_default();
            part.lines()
                .filter_map(|l| l.strip_prefix("| `"))
                .filter_map(|l| l.split('`').next())
                .filter(|k| *k != "tls key" && *k != "key")
                .map(str::to_owned)
                .collect()
        };
        for (root, section) in [("ServerConfig", "server.toml"), ("NodeConfig", "node.toml")] {
            let mut expected = std::collections::BTreeSet::new();
            keys(&structs, root, "", &mut expected);
            assert_eq!(rows(section), expected, "docs/settings.md, {section}");
        }
        let tls: std::collections::BTreeSet<String> =
            structs["ClientTls"].iter().map(|(f, _)| f.clone()).collect();
        let documented_tls: std::collections::BTreeSet<String> = doc
            .lines()
            .skip_while(|l| !l.starts_with("| `tls` key"))
            .skip(2)
            .take_while(|l| l.starts_with("| `"))
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next().map(str::to_owned))
            .collect();
        assert_eq!(documented_tls, tls);
    }

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
