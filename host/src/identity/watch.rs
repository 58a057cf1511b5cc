//! Files that are reloaded when they change (certificates, the tokens file), without a
//! watcher thread: whoever reads the value checks the files' modification times, at most
//! once per [`CHECK_EVERY`], and reloads when one moved. A reload that fails (a half-written
//! file) keeps the previous value and is retried at the next check.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

/// The longest a changed file goes unnoticed; also the bound on `stat` calls.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

type Loader<T, E> = Box<dyn Fn() -> Result<T, E> + Send + Sync>;

/// A value loaded from files, reloaded when they change.
pub struct Watched<T, E> {
    what: &'static str,
    paths: Vec<PathBuf>,
    load: Loader<T, E>,
    value: RwLock<Arc<T>>,
    state: Mutex<State>,
}

struct State {
    checked: Instant,
    stamps: Vec<Option<SystemTime>>,
}

impl<T, E: std::fmt::Display> Watched<T, E> {
    /// Loads the value now (an error is returned, so a bad file stops the start-up).
    pub fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        load: impl Fn() -> Result<T, E> + Send + Sync + 'static,
    ) -> Result<Self, E> {
        let stamps = stamps(&paths);
        let value = load()?;
        Ok(Self {
            what,
            paths,
            load: Box::new(load),
            value: RwLock::new(Arc::new(value)),
            state: Mutex::new(State {
                checked: Instant::now(),
                stamps,
            }),
        })
    }

    /// The current value, reloaded first if a file changed since the last check.
    pub fn get(&self) -> Arc<T> {
        self.refresh();
        self.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn refresh(&self) {
        // Only one caller checks; the others use the current value meanwhile.
        let Ok(mut state) = self.state.try_lock() else {
            return;
        };
        if state.checked.elapsed() < CHECK_EVERY {
            return;
        }
        state.checked = Instant::now();
        let now = stamps(&self.paths);
        if now == state.stamps {
            return;
        }
        match (self.load)() {
            Ok(v) => {
                *self.value.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(v);
                state.stamps = now;
                info!(what = self.what, "reloaded after a file changed");
            }
            // Stamps stay old: retried at the next check.
            Err(e) => {
                warn!(what = self.what, error = %e, "reload failed; keeping the previous version")
            }
        }
    }
}

fn stamps(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_on_change_and_keeps_the_old_value_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("v");
        std::fs::write(&file, "1").unwrap();
        let f = file.clone();
        let w = Watched::new("test", vec![file.clone()], move || {
            let s = std::fs::read_to_string(&f).map_err(|e| e.to_string())?;
            s.trim().parse::<u32>().map_err(|e| e.to_string())
        })
        .unwrap();
        assert_eq!(*w.get(), 1);
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::write(&file, "2").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        w.state.lock().unwrap().checked -= CHECK_EVERY;
        assert_eq!(*w.get(), 2);
        std::fs::write(&file, "not a number").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later + Duration::from_secs(5))
            .unwrap();
        w.state.lock().unwrap().checked -= CHECK_EVERY;
        assert_eq!(*w.get(), 2);
    }
}
