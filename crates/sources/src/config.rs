//! What every kind's config block shares: the error a block's check gives (the key
//! and what is wrong; the binary adds the file, the line and the registry), where
//! relative paths start, and the checks several kinds make (required text, addresses,
//! credentials, durations, lists).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// One key of a registry's block is wrong. `message` never quotes a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockError {
    /// The key within the registry entry, e.g. `prefix`.
    pub key: String,
    pub message: String,
}

impl BlockError {
    pub fn new(key: &str, message: impl Into<String>) -> BlockError {
        BlockError {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// Where the config file is, for paths relative to it.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub base: &'a Path,
}

impl Context<'_> {
    pub fn path(&self, value: &str) -> PathBuf {
        self.base.join(value.trim())
    }
}

/// `address`: one string (a connect string, or URLs separated by commas) or a list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum RawAddress {
    One(String),
    Many(Vec<String>),
}

impl RawAddress {
    fn entries(&self) -> Vec<String> {
        let items: Vec<&str> = match self {
            RawAddress::One(one) => one.split(',').collect(),
            RawAddress::Many(many) => many.iter().flat_map(|m| m.split(',')).collect(),
        };
        items
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// A whole number written as a YAML scalar (which reaches a block as text).
pub fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom("expected a whole number"))
}

/// A key that must be set and not blank; `what` says what it holds.
pub fn required(value: &Option<String>, key: &str, what: &str) -> Result<String, BlockError> {
    match value {
        None if what.is_empty() => Err(BlockError::new(key, "is required")),
        None => Err(BlockError::new(key, format!("is required: {what}"))),
        Some(v) if v.trim().is_empty() => Err(BlockError::new(key, "must not be empty")),
        Some(v) => Ok(v.trim().to_string()),
    }
}

/// The entries of `address`, none carrying credentials.
pub fn address(value: &Option<RawAddress>, what: &str) -> Result<Vec<String>, BlockError> {
    let Some(address) = value else {
        return Err(BlockError::new("address", format!("is required: {what}")));
    };
    let entries = address.entries();
    if entries.is_empty() {
        return Err(BlockError::new("address", "must not be empty"));
    }
    // Not echoed: the value holds a password.
    if entries.iter().any(|e| has_userinfo(e)) {
        return Err(BlockError::new(
            "address",
            "carries credentials (`user:password@` before the host); they would end up in logs \
             and errors, so registry-sync refuses them: remove them and set the registry's \
             credential keys instead (`username` with `password_file` or `password_env`, or \
             its token keys)",
        ));
    }
    Ok(entries)
}

/// `user[:password]@` before the host of a URL or `host:port`.
pub fn has_userinfo(address: &str) -> bool {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.contains('@')
}

/// A secret given as a file (`<name>_file`, relative to the config) or an environment
/// variable (`<name>_env`), not both; `what` names it in the error ("the password").
pub fn secret_source(
    cx: &Context,
    name: &str,
    what: &str,
    file: &Option<String>,
    env: &Option<String>,
) -> Result<Option<crate::secret::SecretSource>, BlockError> {
    use crate::secret::SecretSource;
    let (file_key, env_key) = (format!("{name}_file"), format!("{name}_env"));
    match (file, env) {
        (Some(_), Some(_)) => Err(BlockError::new(
            &env_key,
            format!("give {what} in `{file_key}` or `{env_key}`, not both"),
        )),
        (Some(_), None) => Ok(Some(SecretSource::File(cx.path(&required(file, &file_key, "")?)))),
        (None, Some(_)) => Ok(Some(SecretSource::Env(required(env, &env_key, "")?))),
        (None, None) => Ok(None),
    }
}

/// `username` with exactly one of `password_file` / `password_env`.
pub fn credentials(
    cx: &Context,
    username: &Option<String>,
    password_file: &Option<String>,
    password_env: &Option<String>,
) -> Result<Option<crate::secret::Credentials>, BlockError> {
    use crate::secret::Credentials;
    let password = secret_source(cx, "password", "the password", password_file, password_env)?;
    match (username, password) {
        (Some(_), Some(password)) => Ok(Some(Credentials {
            username: required(username, "username", "")?,
            password,
        })),
        (Some(_), None) => Err(BlockError::new(
            "username",
            "needs a password: set `password_file` (a file holding it) or `password_env` (an environment variable)",
        )),
        (None, Some(_)) => Err(BlockError::new(
            "username",
            "is required when a password is given",
        )),
        (None, None) => Ok(None),
    }
}

/// One `http://` or `https://` URL in `address`, and `ca_file` only with `https://`.
pub fn url(
    cx: &Context,
    address: &Option<RawAddress>,
    ca_file: &Option<String>,
    example: &str,
) -> Result<(String, Option<PathBuf>), BlockError> {
    let entries = self::address(address, &format!("the URL of the registry, e.g. {example}"))?;
    let [url] = entries.as_slice() else {
        return Err(BlockError::new(
            "address",
            format!("give one URL, e.g. {example}"),
        ));
    };
    let https = url.starts_with("https://");
    if !(https || url.starts_with("http://")) || url.len() <= "https://".len() {
        return Err(BlockError::new(
            "address",
            format!("{url:?} must be a URL starting with http:// or https://, e.g. {example}"),
        ));
    }
    let ca = match ca_file {
        Some(_) if !https => return Err(BlockError::new("ca_file", "needs an https:// `address`")),
        Some(ca) => Some(cx.path(ca)),
        None => None,
    };
    Ok((url.clone(), ca))
}

/// `10s`, `2500ms`, `1m`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

/// A duration within `bounds`, or `default` when not given.
pub fn duration_in(
    value: &Option<String>,
    key: &str,
    bounds: std::ops::RangeInclusive<Duration>,
    default: Duration,
) -> Result<Duration, BlockError> {
    let Some(value) = value else { return Ok(default) };
    parse_duration(value)
        .filter(|d| bounds.contains(d))
        .ok_or_else(|| {
            BlockError::new(
                key,
                format!(
                    "{value:?} must be a duration from {:?} to {:?}, e.g. 500ms, 5s or 2m",
                    bounds.start(),
                    bounds.end()
                ),
            )
        })
}

/// A list of non-empty strings, or `None` when not given.
pub fn list(value: &Option<Vec<String>>, key: &str) -> Result<Option<Vec<String>>, BlockError> {
    let Some(value) = value else { return Ok(None) };
    if value.is_empty() || value.iter().any(|v| v.trim().is_empty()) {
        return Err(BlockError::new(key, "must list at least one value, none empty"));
    }
    Ok(Some(value.iter().map(|v| v.trim().to_string()).collect()))
}

/// The keys of a block type, as serde knows them: what the config accepts for a kind,
/// listed in its errors and held against the docs by a test.
pub fn keys_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);

    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Stop {
            Stop
        }
    }

    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields = Fields(None);
    let _ = T::deserialize(&mut fields);
    fields.0.unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_ms_s_and_m() {
        assert_eq!(parse_duration("2500ms"), Some(Duration::from_millis(2500)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("2h"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn a_blocks_keys_are_its_serde_fields() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Block {
            address: Option<String>,
            #[serde(rename = "value_format")]
            format: Option<String>,
        }
        assert_eq!(keys_of::<Block>(), ["address", "value_format"]);
    }
}
