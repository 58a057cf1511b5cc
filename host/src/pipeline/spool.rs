//! `docker load` archives, kept on disk while the tags inside are judged.
//!
//! A loaded archive names the tags the engine will point at its images (`manifest.json`'s
//! `RepoTags`, or the legacy `repositories` file), and the engine moves them as it loads:
//! streamed through unread, `docker load` would move anyone's tags. So the archive is read
//! whole into an unlinked file of the gateway's (bounded by `limits.max_load_bytes`), the
//! tags are read from that file, plugins judge them, and the engine gets the very bytes that
//! were read, from the same file.
//!
//! # Reading it as the engine will
//!
//! dockerd unpacks the archive into a directory and opens `manifest.json` there, following
//! links inside it; without one it reads `repositories`. An archive in which those names
//! could mean two files is refused rather than guessed at: either of them twice, as a link
//! or a directory, or any entry beneath a link (`x -> .` then `x/manifest.json`). Archives
//! `docker save` writes have none of these. Compression: plain and gzip are read (the two
//! `docker save` and `docker save | gzip` give); bzip2, xz and zstd archives are refused with
//! a hint, since the gateway would have to unpack them exactly as the engine does.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::gojson;
use super::Body;

/// Largest `manifest.json` or `repositories` read from an archive.
const MAX_INDEX_BYTES: u64 = 4 * 1024 * 1024;

/// Chunk size when the archive is sent on to the engine.
const CHUNK: usize = 256 * 1024;

/// Image configs hashed per archive at most (a `docker save` of one image has one).
const MAX_CONFIGS: usize = 4096;

/// A tag a `docker load` archive names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedTag {
    /// Where in the archive: `manifest.json[0].RepoTags[1]`, `repositories["app"]`.
    pub field: String,
    /// The tag as written there.
    pub reference: String,
    /// The id of the image the engine will point it at (`sha256:` of the image config the
    /// manifest names, as dockerd computes it), when the archive says.
    pub image: Option<String>,
}

/// Why an archive could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the image archive is larger than the {limit} limit (limits.max_load_bytes)")]
    TooLarge { limit: bytesize::ByteSize },
    #[error("cannot keep the image archive to judge it (limits.spool_dir): {0}")]
    Disk(String),
    #[error("error reading the image archive: {0}")]
    Read(String),
    #[error("the image archive cannot be judged: {0}")]
    Unreadable(String),
}

/// A spooled archive and the tags it names.
pub struct Archive {
    file: std::fs::File,
    /// The tags it names.
    pub tags: Vec<LoadedTag>,
}

/// Reads `incoming` into a file in `dir` (at most `limit` bytes) and the tags it names.
pub async fn spool(
    mut incoming: Incoming,
    dir: &Path,
    limit: bytesize::ByteSize,
) -> Result<Archive, SpoolError> {
    let disk = |e: std::io::Error| SpoolError::Disk(e.to_string());
    // Unlinked at once: nothing is left behind, whatever happens to the request.
    let file = tempfile::tempfile_in(dir).map_err(disk)?;
    let mut out = tokio::fs::File::from_std(file);
    let mut len = 0u64;
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| SpoolError::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            len += data.len() as u64;
            if len > limit.as_u64() {
                return Err(SpoolError::TooLarge { limit });
            }
            out.write_all(&data).await.map_err(disk)?;
        }
    }
    out.flush().await.map_err(disk)?;
    let mut file = out.into_std().await;
    tokio::task::spawn_blocking(move || {
        file.seek(SeekFrom::Start(0)).map_err(disk)?;
        let tags = tags_in(&mut file)?;
        file.seek(SeekFrom::Start(0)).map_err(disk)?;
        Ok(Archive { file, tags })
    })
    .await
    .map_err(|e| SpoolError::Disk(e.to_string()))?
}

impl Archive {
    /// The archive as a request body, read from the file as the engine takes it.
    pub fn into_body(self) -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut file = tokio::fs::File::from_std(self.file);
        tokio::spawn(async move {
            loop {
                let mut buf = vec![0u8; CHUNK];
                match file.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        break;
                    }
                }
            }
        });
        Body::channel(rx)
    }
}

/// The tags `archive` names, as dockerd's loader finds them.
fn tags_in(archive: &mut (impl Read + Seek)) -> Result<Vec<LoadedTag>, SpoolError> {
    let unreadable = |why: String| SpoolError::Unreadable(why);
    let mut magic = [0u8; 6];
    let n = archive
        .read(&mut magic)
        .map_err(|e| SpoolError::Disk(e.to_string()))?;
    archive
        .seek(SeekFrom::Start(0))
        .map_err(|e| SpoolError::Disk(e.to_string()))?;
    let magic = &magic[..n];
    let compressed = [
        (&b"BZh"[..], "bzip2"),
        (&[0xFD, b'7', b'z', b'X', b'Z', 0x00][..], "xz"),
        (&[0x28, 0xB5, 0x2F, 0xFD][..], "zstd"),
    ];
    if let Some((_, name)) = compressed.iter().find(|(m, _)| magic.starts_with(m)) {
        return Err(unreadable(format!(
            "it is {name}-compressed; load it uncompressed or gzip-compressed"
        )));
    }
    let Index {
        manifest,
        repositories,
        configs,
    } = if magic.starts_with(&[0x1F, 0x8B]) {
        index_files(flate2::read::GzDecoder::new(archive))?
    } else {
        index_files(archive)?
    };
    let decode = |name: &str, bytes: &[u8]| {
        gojson::decode_strict(bytes).map_err(|e| unreadable(format!("{name}: {e}")))
    };
    let mut tags = Vec::new();
    if let Some(bytes) = manifest {
        let doc = decode("manifest.json", &bytes)?;
        let items = doc
            .as_array()
            .ok_or_else(|| unreadable("manifest.json is not a list".into()))?;
        for (i, item) in items.iter().enumerate() {
            let Some(object) = item.as_object() else {
                return Err(unreadable(format!("manifest.json[{i}] is not an object")));
            };
            let at = format!("manifest.json[{i}].");
            // The engine's id for the image is the digest of the config file's bytes, so
            // only a config read here (not a name) says where the tags will point.
            let image = gojson::struct_field(object, "Config", &at)
                .map_err(|e| unreadable(e.to_string()))?
                .and_then(Value::as_str)
                .and_then(clean)
                .and_then(|path| configs.get(&path).cloned());
            let repo_tags = gojson::struct_field(object, "RepoTags", &at)
                .map_err(|e| unreadable(e.to_string()))?;
            let list = match repo_tags {
                None | Some(Value::Null) => continue,
                Some(Value::Array(list)) => list,
                Some(_) => return Err(unreadable(format!("{at}RepoTags is not a list"))),
            };
            for (j, t) in list.iter().enumerate() {
                let t = t
                    .as_str()
                    .ok_or_else(|| unreadable(format!("{at}RepoTags[{j}] is not a string")))?;
                tags.push(LoadedTag {
                    field: format!("{at}RepoTags[{j}]"),
                    reference: t.to_owned(),
                    image: image.clone(),
                });
            }
        }
    } else if let Some(bytes) = repositories {
        // `{"repo": {"tag": "id"}}`: names are data, so only exact repeats are ambiguous.
        let doc = decode("repositories", &bytes)?;
        let repos = doc
            .as_object()
            .ok_or_else(|| unreadable("repositories is not an object".into()))?;
        for (repo, tags_of) in repos {
            let Some(tags_of) = tags_of.as_object() else {
                return Err(unreadable(format!(
                    "repositories[{repo:?}] is not an object"
                )));
            };
            for tag in tags_of.keys() {
                tags.push(LoadedTag {
                    field: format!("repositories[{repo:?}]"),
                    reference: format!("{repo}:{tag}"),
                    image: None,
                });
            }
        }
    }
    Ok(tags)
}

/// What an archive says about its images.
struct Index {
    manifest: Option<Vec<u8>>,
    repositories: Option<Vec<u8>>,
    /// `sha256:` of each small regular `.json` file or blob, by path: the image configs a
    /// manifest may name.
    configs: std::collections::HashMap<String, String>,
}

/// `manifest.json` and `repositories` from the tar stream `reader`, each if present, and
/// the digests of the files that may be image configs.
fn index_files(reader: impl Read) -> Result<Index, SpoolError> {
    let unreadable = |why: String| SpoolError::Unreadable(why);
    let bad_tar = |e: std::io::Error| unreadable(format!("not a tar archive: {e}"));
    let mut tar = tar::Archive::new(reader);
    let mut links: Vec<String> = Vec::new();
    let mut manifest = None;
    let mut repositories = None;
    let mut configs = std::collections::HashMap::new();
    for entry in tar.entries().map_err(bad_tar)? {
        let mut entry = entry.map_err(bad_tar)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = clean(&raw)
            .ok_or_else(|| unreadable(format!("entry {raw:?} points outside the archive")))?;
        if let Some(link) = links.iter().find(|l| path.starts_with(&format!("{l}/"))) {
            return Err(unreadable(format!(
                "entry {raw:?} lies beneath the link {link:?}"
            )));
        }
        let index = matches!(path.as_str(), "manifest.json" | "repositories");
        // A path given twice (as a file, link or directory) could be either: a config
        // hashed under it is not known any more.
        let repeated = configs.get_mut(&path).map(String::clear).is_some();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if index {
                return Err(unreadable(format!("{path} is a link")));
            }
            links.push(path);
            continue;
        }
        if !index
            && !repeated
            && (path.ends_with(".json") || path.starts_with("blobs/"))
            && (kind.is_file() || kind.is_contiguous())
            && entry.size() <= MAX_INDEX_BYTES
            && configs.len() < MAX_CONFIGS
        {
            let mut hash = Sha256::new();
            std::io::copy(&mut entry.by_ref().take(MAX_INDEX_BYTES), &mut hash).map_err(bad_tar)?;
            configs.insert(path, format!("sha256:{:x}", hash.finalize()));
            continue;
        }
        if !index {
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            return Err(unreadable(format!("{path} is not a file")));
        }
        let slot = if path == "manifest.json" {
            &mut manifest
        } else {
            &mut repositories
        };
        if slot.is_some() {
            return Err(unreadable(format!("{path} is in the archive twice")));
        }
        if entry.size() > MAX_INDEX_BYTES {
            return Err(unreadable(format!(
                "{path} is larger than {MAX_INDEX_BYTES} bytes"
            )));
        }
        let mut bytes = Vec::new();
        entry
            .by_ref()
            .take(MAX_INDEX_BYTES)
            .read_to_end(&mut bytes)
            .map_err(bad_tar)?;
        *slot = Some(bytes);
    }
    configs.retain(|_, digest| !digest.is_empty());
    Ok(Index {
        manifest,
        repositories,
        configs,
    })
}

/// An entry's name as the engine's unpacker places it (Go's `filepath.Clean`, rooted at the
/// archive's directory); none when it would leave that directory.
fn clean(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    enum E<'a> {
        File(&'a str, &'a [u8]),
        Link(&'a str, &'a str),
        Dir(&'a str),
    }

    /// A tar archive of `entries`, names written as given (the tar crate's builder refuses
    /// `..`, which is the point of some of these).
    fn archive(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_old();
            let (name, data, kind, link): (&str, &[u8], _, &str) = match e {
                E::File(name, data) => (name, data, tar::EntryType::Regular, ""),
                E::Link(name, target) => (name, &[], tar::EntryType::Symlink, target),
                E::Dir(name) => (name, &[], tar::EntryType::Directory, ""),
            };
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn tags(bytes: Vec<u8>) -> Result<Vec<(String, String)>, String> {
        tags_in(&mut Cursor::new(bytes))
            .map(|t| t.into_iter().map(|t| (t.field, t.reference)).collect())
            .map_err(|e| e.to_string())
    }

    const MANIFEST: &[u8] =
        br#"[{"Config":"c.json","RepoTags":["app:1","docker.io/library/base"],"Layers":[]},{"Config":"d.json","RepoTags":null}]"#;

    #[test]
    fn the_tags_an_archive_names() {
        let saved = archive(&[
            E::Dir("abc"),
            E::File("abc/layer.tar", b""),
            E::Link("def/layer.tar", "../abc/layer.tar"),
            E::File("./manifest.json", MANIFEST),
            E::File("repositories", br#"{"ignored":{"x":"y"}}"#),
        ]);
        let want = vec![
            (
                "manifest.json[0].RepoTags[0]".to_owned(),
                "app:1".to_owned(),
            ),
            (
                "manifest.json[0].RepoTags[1]".to_owned(),
                "docker.io/library/base".to_owned(),
            ),
        ];
        assert_eq!(tags(saved.clone()), Ok(want.clone()));
        // gzip-compressed, as `docker save | gzip` gives.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &saved).unwrap();
        assert_eq!(tags(gz.finish().unwrap()), Ok(want));
        // Go's field matching: `repotags` is `RepoTags`.
        let lower = archive(&[E::File("manifest.json", br#"[{"repotags":["x:1"]}]"#)]);
        assert_eq!(tags(lower).unwrap()[0].1, "x:1");
        // The legacy format, without manifest.json.
        let legacy = archive(&[E::File("repositories", br#"{"old":{"1":"abc","2":"def"}}"#)]);
        assert_eq!(
            tags(legacy)
                .unwrap()
                .iter()
                .map(|t| t.1.as_str())
                .collect::<Vec<_>>(),
            ["old:1", "old:2"]
        );
        assert_eq!(tags(archive(&[E::File("x", b"")])), Ok(Vec::new()));
        // The image a tag will name: the digest of the config's bytes, not its file name.
        let config = br#"{"config":{}}"#;
        let digest = format!("sha256:{:x}", Sha256::digest(config));
        let named = |entries: &[E]| {
            tags_in(&mut Cursor::new(archive(entries))).unwrap()[0]
                .image
                .clone()
        };
        let manifest = br#"[{"Config":"0000.json","RepoTags":["app:1"]}]"#;
        assert_eq!(
            named(&[
                E::File("0000.json", config),
                E::File("manifest.json", manifest)
            ]),
            Some(digest)
        );
        assert_eq!(named(&[E::File("manifest.json", manifest)]), None);
        // Two files of that name: the engine would read the last, the gateway knows neither.
        assert_eq!(
            named(&[
                E::File("0000.json", config),
                E::File("./0000.json", b"{}"),
                E::File("manifest.json", manifest)
            ]),
            None
        );
    }

    #[test]
    fn archives_that_could_mean_two_things_are_refused() {
        for (entries, why) in [
            (
                vec![
                    E::File("manifest.json", b"[]"),
                    E::File("a/../manifest.json", MANIFEST),
                ],
                "twice",
            ),
            (vec![E::Link("manifest.json", "other.json")], "is a link"),
            (vec![E::Dir("manifest.json")], "is not a file"),
            (
                vec![E::Link("x", "."), E::File("x/manifest.json", MANIFEST)],
                "beneath the link",
            ),
            (
                vec![E::File("../manifest.json", MANIFEST)],
                "outside the archive",
            ),
            (
                vec![E::File(
                    "manifest.json",
                    br#"[{"RepoTags":["a:1"],"repoTags":["b:1"]}]"#,
                )],
                "given twice",
            ),
            (
                vec![E::File("manifest.json", br#"{"RepoTags":[]}"#)],
                "not a list",
            ),
        ] {
            let err = tags(archive(&entries)).unwrap_err();
            assert!(err.contains(why), "{why}: {err}");
        }
        let xz = [0xFD, b'7', b'z', b'X', b'Z', 0x00, 1, 2, 3].to_vec();
        assert!(tags(xz).unwrap_err().contains("xz-compressed"));
        assert!(
            tags(b"not a tar at all, but long enough to be read as a header? no".repeat(20))
                .is_err()
        );
    }
}
