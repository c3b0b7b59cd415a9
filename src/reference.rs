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

mod architecture {
    use std::path::Path;

    /// Every file and folder docs/ARCHITECTURE.md names exists: a path from the repository's
    /// root (`crates/node/src/jobs.rs`), or a file name in a code-map row, under that row's
    /// folder (`mod.rs` in the row of `crates/server/src/app/`).
    #[test]
    fn every_path_the_architecture_names_exists() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = include_str!("../docs/ARCHITECTURE.md");
        let tops = [
            "crates/",
            "src/",
            "tests/",
            "sdk/",
            "python/",
            "scripts/",
            "docs/",
            "migrations/",
            "compose/",
            "broker/",
            "demo/",
            "benches/",
            "deploy/",
            ".ci/",
        ];
        let file = |t: &str| {
            let name = t.rsplit('/').next().unwrap_or(t);
            t.chars().all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
                && [".rs", ".py", ".sql", ".toml", ".sh", ".md", ".json", ".yml", ".yaml"]
                    .iter()
                    .any(|ext| name.ends_with(ext) && name.len() > ext.len())
        };
        let mut missing = Vec::new();
        for line in text.lines() {
            let folder = line
                .strip_prefix("| `")
                .and_then(|rest| rest.split('`').next())
                .filter(|f| f.ends_with('/'))
                .map(|f| f.split(' ').next().unwrap_or(f));
            for (i, token) in line.split('`').enumerate() {
                if i % 2 == 0 {
                    continue;
                }
                let from_root = tops.iter().any(|t| token.starts_with(t));
                if !(file(token) || (from_root && token.ends_with('/'))) || (!from_root && folder.is_none()) {
                    continue;
                }
                // A path in a row is read from the row's folder, one of its parents (a crate's
                // `src/`), or one folder below it (`tests/` names `integration/…`'s files).
                let token_path = token.trim_end_matches(['*', '/']);
                let mut bases = vec![root.to_path_buf()];
                if let Some(folder) = folder {
                    let folder = root.join(folder);
                    bases.extend(
                        folder.ancestors().take_while(|a| a.starts_with(root)).map(Path::to_path_buf),
                    );
                    if let Ok(entries) = std::fs::read_dir(&folder) {
                        bases.extend(entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()));
                    }
                }
                if !bases.iter().any(|b| b.join(token_path).exists()) {
                    missing.push(format!("{}{token}", folder.unwrap_or_default()));
                }
            }
        }
        assert!(missing.is_empty(), "docs/ARCHITECTURE.md names paths that do not exist: {missing:?}");
    }
}
