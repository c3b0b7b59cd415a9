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
