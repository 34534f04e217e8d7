//! Loading typed configuration with figment: defaults, then an optional TOML file, then
//! `NATTER_*` environment variables (`NATTER_GATEWAY__LISTEN_ADDR` sets `gateway.listen_addr`).

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Loads `T` from its defaults, `file` (if given) and the environment. Errors name the key
/// and the source that was wrong.
pub fn load<T: Serialize + DeserializeOwned + Default>(
    file: Option<&Path>,
) -> Result<T, Box<figment::Error>> {
    layered(Figment::from(Serialized::defaults(T::default())), file)
        .extract()
        .map_err(Box::new)
}

/// `defaults`, with `file` (if given) and then the environment layered over it.
pub fn layered(defaults: Figment, file: Option<&Path>) -> Figment {
    let mut figment = defaults;
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment.merge(Env::prefixed("NATTER_").split("__"))
}
