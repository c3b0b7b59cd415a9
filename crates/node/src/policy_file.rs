//! `fedq node policy allow|remove`: the image rules of node.toml edited in place, keeping its
//! comments and layout, and checked as the node will read them before anything is written.

use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

use crate::config::{ConfigError, ImageRule, NodeConfig};

/// Why node.toml could not be edited.
#[derive(Debug, thiserror::Error)]
pub enum PolicyEditError {
    /// The file is not TOML.
    #[error("not a TOML file ({0}); fix it by hand, then try again")]
    Syntax(String),
    /// `[policy] images` is written in a form this command does not edit.
    #[error(
        "[policy] images is written as {0}, not as [[policy.images]] tables; edit it by hand, or rewrite it as \
         [[policy.images]] tables"
    )]
    Shape(&'static str),
    /// No rule names the image.
    #[error("no [[policy.images]] rule names {name:?}{digest}; `fedq node policy list` shows the rules")]
    NoSuchRule {
        /// The name asked for.
        name: String,
        /// The digest asked for, as words for the message.
        digest: String,
    },
    /// The file after the edit would not be valid settings.
    #[error("the edit would leave invalid settings, so nothing was written: {0}")]
    Invalid(#[from] ConfigError),
}

/// node.toml, parsed for editing.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    doc: DocumentMut,
}

impl PolicyFile {
    /// Parses the settings file's text.
    pub fn parse(text: &str) -> Result<Self, PolicyEditError> {
        let doc = text.parse::<DocumentMut>().map_err(|e| PolicyEditError::Syntax(e.message().to_owned()))?;
        Ok(Self { doc })
    }

    /// The `[[policy.images]]` tables, made if absent.
    fn images(&mut self) -> Result<&mut ArrayOfTables, PolicyEditError> {
        let policy = self.doc.entry("policy").or_insert_with(|| Item::Table(Table::new()));
        let policy = policy.as_table_mut().ok_or(PolicyEditError::Shape("something other than a table"))?;
        let images = policy.entry("images").or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()));
        match images {
            Item::ArrayOfTables(tables) => Ok(tables),
            Item::Value(v) if v.is_array() => Err(PolicyEditError::Shape("an inline array")),
            _ => Err(PolicyEditError::Shape("something other than a list")),
        }
    }

    /// Adds a rule for `rule.name` pinned to `rule.digest`. Rules of the same name are replaced
    /// (an image rebuilt is pinned anew) unless `keep_others` (two versions allowed side by side);
    /// a rule of the same name and digest is always replaced. Returns the rules taken out.
    pub fn allow(&mut self, rule: &ImageRule, keep_others: bool) -> Result<Vec<ImageRule>, PolicyEditError> {
        let images = self.images()?;
        let removed = take(images, &rule.name, keep_others.then_some(rule.digest.as_str()));
        let mut table = Table::new();
        table.decor_mut().set_prefix(
            "\n# Pinned by `fedq node policy allow` to the image this machine has: a rebuilt image must be allowed again.\n",
        );
        table.insert("name", value(&rule.name));
        table.insert("digest", value(&rule.digest));
        table.insert("data", value(strings(&rule.data)));
        if !rule.requesters.is_empty() {
            table.insert("requesters", value(strings(&rule.requesters)));
        }
        images.push(table);
        Ok(removed)
    }

    /// Removes the rules of `name` (and `digest`, if given). Returns them; none is an error.
    pub fn remove(&mut self, name: &str, digest: Option<&str>) -> Result<Vec<ImageRule>, PolicyEditError> {
        let removed = take(self.images()?, name, digest);
        if removed.is_empty() {
            return Err(PolicyEditError::NoSuchRule {
                name: name.to_owned(),
                digest: digest.map(|d| format!(" with digest {d}")).unwrap_or_default(),
            });
        }
        Ok(removed)
    }

    /// The edited text, once it parses as settings the node accepts (as `NodeConfig::load`
    /// would read it, environment included).
    pub fn checked_text(&self) -> Result<String, PolicyEditError> {
        let text = self.doc.to_string();
        NodeConfig::parse(&text)?;
        Ok(text)
    }
}

/// Takes out the rules of `name` (pinned to `digest`, if given) and returns them.
fn take(images: &mut ArrayOfTables, name: &str, digest: Option<&str>) -> Vec<ImageRule> {
    let mut taken = Vec::new();
    images.retain(|t| {
        let rule = rule_of(t);
        let hit = rule.name == name && digest.is_none_or(|d| rule.digest == d);
        if hit {
            taken.push(rule);
        }
        !hit
    });
    taken
}

fn text(table: &Table, key: &str) -> Option<String> {
    table.get(key)?.as_str().map(str::to_owned)
}

fn list(table: &Table, key: &str) -> Vec<String> {
    let Some(array) = table.get(key).and_then(Item::as_array) else { return Vec::new() };
    array.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

fn rule_of(table: &Table) -> ImageRule {
    ImageRule {
        name: text(table, "name").unwrap_or_default(),
        digest: text(table, "digest").unwrap_or_else(|| "*".into()),
        data: list(table, "data"),
        requesters: list(table, "requesters"),
    }
}

fn strings(items: &[String]) -> Array {
    items.iter().map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, digest: &str, data: &[&str]) -> ImageRule {
        ImageRule {
            name: name.into(),
            digest: digest.into(),
            data: data.iter().map(|d| (*d).to_owned()).collect(),
            requesters: Vec::new(),
        }
    }

    #[test]
    fn allow_pins_keeps_comments_and_replaces_an_older_pin() {
        let base = format!("# kept comment\n{}", crate::config::tests::example());
        let mut file = PolicyFile::parse(&base).unwrap();
        let removed = file.allow(&rule("fedq/new", "sha256:aaa", &["patients"]), false).unwrap();
        assert!(removed.is_empty());
        let text = file.checked_text().unwrap();
        assert!(text.starts_with("# kept comment\n"), "{text}");
        let config = NodeConfig::parse(&text).unwrap();
        let new = config.policy.images.iter().find(|r| r.name == "fedq/new").unwrap();
        assert_eq!((new.digest.as_str(), new.data.as_slice()), ("sha256:aaa", &["patients".to_owned()][..]));

        // A rebuilt image: the new pin replaces the old one, unless both are kept.
        let mut again = PolicyFile::parse(&text).unwrap();
        let removed = again.allow(&rule("fedq/new", "sha256:bbb", &[]), false).unwrap();
        assert_eq!(removed, vec![rule("fedq/new", "sha256:aaa", &["patients"])]);
        let mut both = PolicyFile::parse(&text).unwrap();
        assert!(both.allow(&rule("fedq/new", "sha256:bbb", &[]), true).unwrap().is_empty());
        let config = NodeConfig::parse(&both.checked_text().unwrap()).unwrap();
        assert_eq!(config.policy.images.iter().filter(|r| r.name == "fedq/new").count(), 2);
    }

    #[test]
    fn remove_takes_the_named_rules_and_says_when_there_is_none() {
        let mut file = PolicyFile::parse(crate::config::tests::example()).unwrap();
        file.allow(&rule("fedq/new", "sha256:aaa", &[]), false).unwrap();
        let err = file.remove("fedq/new", Some("sha256:zzz")).unwrap_err();
        assert!(
            err.to_string().contains("no [[policy.images]] rule names \"fedq/new\" with digest sha256:zzz")
        );
        assert_eq!(file.remove("fedq/new", None).unwrap().len(), 1);
        let config = NodeConfig::parse(&file.checked_text().unwrap()).unwrap();
        assert!(config.policy.images.iter().all(|r| r.name != "fedq/new"));
    }

    #[test]
    fn an_edit_that_would_break_the_settings_writes_nothing() {
        let mut file = PolicyFile::parse(crate::config::tests::example()).unwrap();
        file.allow(&rule("fedq/new", "sha256:aaa", &["nowhere"]), false).unwrap();
        let err = file.checked_text().unwrap_err().to_string();
        assert!(err.contains("nothing was written") && err.contains("\"nowhere\""), "{err}");
        let inline = "[policy]\nimages = [{ name = \"x\" }]\n";
        let err = PolicyFile::parse(inline).unwrap().remove("x", None).unwrap_err();
        assert!(matches!(err, PolicyEditError::Shape("an inline array")), "{err}");
        assert!(matches!(PolicyFile::parse("[policy\n"), Err(PolicyEditError::Syntax(_))));
    }
}
