//! The reference documents checked against the code they describe, across the workspace's
//! crates.

mod settings {
    /// Every key of the settings structs has a row in docs/settings.md, and every row names a
    /// key: the reference cannot drift from the code. Fields are read from the source, as the
    /// structs' serde names are their field names.
    #[test]
    fn the_settings_reference_lists_exactly_the_keys() {
        let sources = [
            include_str!("../crates/server/src/config.rs"),
            include_str!("../crates/node/src/config.rs"),
            include_str!("../crates/tls/src/lib.rs"),
            include_str!("../crates/service/src/metrics.rs"),
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
}
