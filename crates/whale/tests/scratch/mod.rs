//! Scratch folders for the CLI tests: under the system temp folder, named
//! by prefix, process and test, and removed when dropped, pass or fail, so
//! that a test run leaves nothing behind (deepseek_cli's modified
//! checkpoints alone were 270 MB a run).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// A scratch folder (or a file in one, see [`Scratch::file`]).
pub struct Scratch {
    dir: PathBuf,
    path: PathBuf,
}

impl Scratch {
    /// An empty folder `PREFIX-PID-NAME` in the temp folder.
    pub fn new(prefix: &str, name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { path: dir.clone(), dir }
    }

    /// The file `name` inside this folder, keeping the folder alive.
    pub fn file(mut self, name: &str) -> Scratch {
        self.path = self.dir.join(name);
        self
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<OsStr> for Scratch {
    fn as_ref(&self) -> &OsStr {
        self.path.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
