//! Compiled components cached on disk. Compiling a large guest (a Python or JavaScript
//! interpreter) takes seconds; the cache key is the component's content hash plus the
//! engine's compatibility hash (wasmtime version and compilation settings), so a cached
//! artifact is only ever loaded by an engine that produced an identical one.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Compiles `bytes`, or loads the cached compilation from `dir`.
pub fn load(engine: &Engine, dir: Option<&Path>, bytes: &[u8]) -> wasmtime::Result<Component> {
    let Some(dir) = dir else {
        return Component::new(engine, bytes);
    };
    let path = entry(engine, dir, bytes);
    if path.exists() {
        // SAFETY: the file is one this gateway wrote with `precompile_component` under a
        // key that includes the engine's compatibility hash; wasmtime still checks its
        // header and refuses an artifact from another engine configuration.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cache entry")
            }
        }
    }
    let compiled = engine.precompile_component(bytes)?;
    // SAFETY: `compiled` was produced just now by this very engine.
    let component = unsafe { Component::deserialize(engine, &compiled)? };
    if let Err(e) = store(dir, &path, &compiled) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the plugin cache; continuing without");
    }
    Ok(component)
}

fn entry(engine: &Engine, dir: &Path, bytes: &[u8]) -> PathBuf {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    // Compilation settings wasmtime's hash leaves out but that change the artifact.
    super::DENSE_IMAGE_LIMIT.hash(&mut engine_hash);
    let mut h = Sha256::new();
    h.update(bytes);
    h.update(engine_hash.finish().to_le_bytes());
    dir.join(format!("{}.cwasm", hex::encode(h.finalize())))
}

/// Writes atomically (temp file + rename) so a concurrent reader never sees half a file.
fn store(dir: &Path, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, compiled)?;
    std::fs::rename(&tmp, path)
}
