//! Scratch directories for the daemon's tests: one per test, unique across
//! the tests of one process running in parallel, removed when dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory of its own for one test (`.0` is its path).
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    /// Creates an empty directory named after the process, a counter and
    /// `tag` (the tag only helps a person find it).
    pub(crate) fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("sb-daemon-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create a scratch directory");
        Scratch(p)
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
