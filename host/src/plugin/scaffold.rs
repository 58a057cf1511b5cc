//! `portcullis plugin new`: a new plugin from the templates in `sdk/` (Rust, Python,
//! JavaScript or C) that builds (`./build.sh`) and passes its own test (`./test.sh`, which
//! runs `portcullis plugin test` on the sample request and compares the verdict).
//!
//! The templates, the language helpers and the WIT package are compiled into the binary, so a
//! scaffold is self-contained: it carries its copy of `wit/` and of the helper module (Python,
//! JavaScript, C). A Rust plugin depends on the SDK crate by path instead (`--sdk`).

use std::path::{Path, PathBuf};

/// Why a plugin could not be scaffolded.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("unknown language {0:?} (rust, python, js, c)")]
    Language(String),
    #[error(
        "invalid plugin name {0:?}: use lowercase letters, digits and '-', starting with a letter"
    )]
    Name(String),
    #[error("{0} already exists and is not empty")]
    Exists(PathBuf),
    #[error("the Rust SDK is not at {0}: pass --sdk with the path of portcullis' sdk/rust")]
    RustSdk(PathBuf),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A guest language with a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

impl std::str::FromStr for Lang {
    type Err = ScaffoldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rust" => Ok(Lang::Rust),
            "python" | "py" => Ok(Lang::Python),
            "js" | "javascript" => Ok(Lang::Js),
            "c" => Ok(Lang::C),
            other => Err(ScaffoldError::Language(other.to_owned())),
        }
    }
}

/// One file of a scaffold: its path in the plugin directory, its text (with `{{name}}`,
/// `{{crate_name}}` and `{{sdk_path}}` placeholders) and whether it is a script.
struct File {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

macro_rules! sdk_file {
    ($path:literal, $src:literal) => {
        File {
            path: $path,
            text: include_str!(concat!("../../../sdk/", $src)),
            executable: false,
        }
    };
    ($path:literal, $src:literal, exec) => {
        File {
            path: $path,
            text: include_str!(concat!("../../../sdk/", $src)),
            executable: true,
        }
    };
}

/// Files every scaffold has: the sample request, its configuration and expected verdict,
/// the test script and a `.gitignore`.
fn common() -> Vec<File> {
    vec![
        sdk_file!("tests/request.json", "rust/template/tests/request.json"),
        sdk_file!("tests/config.json", "template/tests/config.json"),
        sdk_file!("tests/expected.json", "template/tests/expected.json"),
        sdk_file!("test.sh", "template/test.sh", exec),
        sdk_file!(".gitignore", "template/gitignore"),
    ]
}

fn files(lang: Lang) -> Vec<File> {
    let mut files = common();
    files.extend(match lang {
        Lang::Rust => vec![
            sdk_file!("Cargo.toml", "rust/template/Cargo.toml"),
            sdk_file!("src/lib.rs", "rust/template/src/lib.rs"),
            sdk_file!("build.sh", "rust/template/build.sh", exec),
        ],
        Lang::Python => vec![
            sdk_file!("app.py", "python/template/app.py"),
            sdk_file!("portcullis_plugin.py", "python/portcullis_plugin.py"),
            sdk_file!("build.sh", "python/template/build.sh", exec),
            sdk_file!("wit/plugin.wit", "wit/0.2.0/plugin.wit"),
        ],
        Lang::Js => vec![
            sdk_file!("plugin.js", "js/template/plugin.js"),
            sdk_file!("portcullis.js", "js/portcullis.js"),
            sdk_file!("portcullis.d.ts", "js/portcullis.d.ts"),
            sdk_file!("componentize.mjs", "js/componentize.mjs"),
            sdk_file!("package.json", "js/template/package.json"),
            sdk_file!("build.sh", "js/template/build.sh", exec),
            sdk_file!("wit/plugin.wit", "wit/0.2.0/plugin.wit"),
        ],
        Lang::C => vec![
            sdk_file!("plugin.c", "c/template/plugin.c"),
            sdk_file!("portcullis.h", "c/portcullis.h"),
            sdk_file!("portcullis_json.h", "c/portcullis_json.h"),
            sdk_file!("build.sh", "c/template/build.sh", exec),
            sdk_file!("wit/plugin.wit", "wit/0.2.0/plugin.wit"),
        ],
    });
    files
}

/// Where this build's source tree keeps the Rust SDK (the default for `--sdk`).
pub fn default_rust_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/rust")
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64
}

/// Creates the plugin `name` in `parent/name` and returns its directory. `rust_sdk` is the
/// SDK crate a Rust plugin depends on (made absolute).
pub fn create(
    lang: Lang,
    name: &str,
    parent: &Path,
    rust_sdk: &Path,
) -> Result<PathBuf, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::Name(name.to_owned()));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ScaffoldError::Io { path, source }
    };
    let dir = parent.join(name);
    if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        return Err(ScaffoldError::Exists(dir));
    }
    let sdk = if lang == Lang::Rust {
        let sdk = std::fs::canonicalize(rust_sdk)
            .map_err(|_| ScaffoldError::RustSdk(rust_sdk.to_owned()))?;
        if !sdk.join("Cargo.toml").is_file() {
            return Err(ScaffoldError::RustSdk(sdk));
        }
        sdk.display().to_string()
    } else {
        String::new()
    };
    let crate_name = name.replace('-', "_");
    for f in files(lang) {
        let path = dir.join(f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let text = f
            .text
            .replace("{{name}}", name)
            .replace("{{crate_name}}", &crate_name)
            .replace("{{sdk_path}}", &sdk);
        std::fs::write(&path, text).map_err(io(&path))?;
        if f.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(io(&path))?;
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "owner-policy", "p2"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "A", "1a", "a_b", "a-", "../x", "a/b", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn every_language_scaffolds_its_files_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        for (lang, main) in [
            (Lang::Rust, "src/lib.rs"),
            (Lang::Python, "app.py"),
            (Lang::Js, "plugin.js"),
            (Lang::C, "plugin.c"),
        ] {
            let name = format!("p-{lang:?}").to_lowercase();
            let dir = create(lang, &name, tmp.path(), &default_rust_sdk()).unwrap();
            let text = std::fs::read_to_string(dir.join(main)).unwrap();
            assert!(text.contains(&name) && !text.contains("{{name}}"), "{main}");
            assert!(std::fs::read_to_string(dir.join("build.sh"))
                .unwrap()
                .contains(&format!("{name}.wasm")));
            assert!(matches!(
                create(lang, &name, tmp.path(), &default_rust_sdk()),
                Err(ScaffoldError::Exists(_))
            ));
        }
    }
}
