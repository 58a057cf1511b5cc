//! Bearer tokens: `Authorization: Bearer <token>`, which the docker CLI sends on every
//! request when its `config.json` has it under `HttpHeaders`.
//!
//! The tokens file holds the SHA-256 of each token, never the token, mapped to a user and
//! groups. A plain hash (not a password hash such as argon2) is right here because every
//! token is 256 random bits made by `portcullis token add`: nobody can search that space,
//! so slowing guesses down buys nothing, while a fast hash keeps checking a token per
//! request to about a microsecond. Someone who reads the file learns no usable token.
//!
//! ```toml
//! [[tokens]]
//! sha256 = "9f86d081884c7d65..."   # sha256 of the token, hex
//! user = "ci"
//! groups = ["builders"]
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of generated tokens, so a leaked one is recognisable in a secret scanner.
pub const PREFIX: &str = "pcl_";

/// Errors reading or writing a tokens file.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid tokens file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write tokens file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate a random token: the system's random source failed")]
    Random,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tokens: Vec<Entry>,
}

/// One token's entry in the file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// The user the token stands for.
    pub user: String,
    /// Its groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The tokens of a file, by hash.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Entry>,
}

impl Tokens {
    /// Reads and checks a tokens file.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, TokensError> {
        let parse_err = |message: String| TokensError::Parse {
            path: path.to_owned(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let mut by_hash = HashMap::new();
        for (i, e) in file.tokens.into_iter().enumerate() {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&e.sha256, &mut hash)
                .map_err(|_| parse_err(format!("tokens[{i}].sha256: expected 64 hex digits")))?;
            if e.user.is_empty() {
                return Err(parse_err(format!("tokens[{i}].user: must not be empty")));
            }
            by_hash.insert(hash, e);
        }
        Ok(Self { by_hash })
    }

    /// The entry of a presented token.
    pub fn find(&self, token: &str) -> Option<&Entry> {
        self.by_hash.get(&hash(token))
    }

    /// How many tokens the file holds.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether the file holds no token.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// The SHA-256 of a token.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The token of an `Authorization` header value, if it is a bearer token.
pub fn bearer(value: &http::HeaderValue) -> Option<&str> {
    let v = value.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Makes a new random token for `user`, appends its hash to the tokens file (created with
/// mode 0600 when missing) and returns the token, which is stored nowhere else.
pub fn add(path: &Path, user: &str, groups: &[String]) -> Result<String, TokensError> {
    use ring::rand::SecureRandom;
    // The file must stay valid: check what is there before appending to it.
    if path.exists() {
        Tokens::load(path)?;
    }
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokensError::Random)?;
    let token = format!("{PREFIX}{}", hex::encode(bytes));
    let entry = File {
        tokens: vec![Entry {
            sha256: hex::encode(hash(&token)),
            user: user.to_owned(),
            groups: groups.to_vec(),
        }],
    };
    let text = toml::to_string(&entry).map_err(|e| TokensError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let write_err = |source| TokensError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(write_err)?
    };
    file.write_all(format!("\n{text}").as_bytes())
        .map_err(write_err)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_tokens_are_found_and_only_their_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let a = add(&path, "ci", &["builders".into()]).unwrap();
        let b = add(&path, "bob", &[]).unwrap();
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 64);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&a[PREFIX.len()..]),
            "the token itself was stored"
        );
        let tokens = Tokens::load(&path).unwrap();
        assert_eq!(tokens.len(), 2);
        let e = tokens.find(&a).unwrap();
        assert_eq!(
            (e.user.as_str(), e.groups.as_slice()),
            ("ci", &["builders".to_owned()][..])
        );
        assert_eq!(tokens.find(&b).unwrap().user, "bob");
        assert!(tokens.find("pcl_wrong").is_none());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn bad_files_name_the_entry() {
        let err = Tokens::parse(
            "[[tokens]]\nsha256 = \"xy\"\nuser = \"a\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tokens[0].sha256"), "{err}");
        let err = Tokens::parse("[[tokens]]\nsha = \"xy\"\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.toml"), "{err}");
    }

    #[test]
    fn bearer_header_parsing() {
        let v = http::HeaderValue::from_static("Bearer pcl_abc");
        assert_eq!(bearer(&v), Some("pcl_abc"));
        let v = http::HeaderValue::from_static("bearer  pcl_abc ");
        assert_eq!(bearer(&v), Some("pcl_abc"));
        assert_eq!(bearer(&http::HeaderValue::from_static("Basic YTpi")), None);
        assert_eq!(bearer(&http::HeaderValue::from_static("Bearer ")), None);
    }
}
