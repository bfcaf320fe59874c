//! One module per subcommand, each with its arguments and its `run`: parse, call `cifs`,
//! print. The runtime and the dataset are opened here for all of them.

pub mod analyze;
pub mod bench;
pub mod eval;
pub mod info;
pub mod train;
pub mod tune;

use std::path::{Path, PathBuf};

use cifs::distributed::Single;
use datasets::DatasetKind;
use engine::Runtime;

use crate::http;

/// `--precision`, set once by `main` for every runtime opened.
pub static PRECISION: std::sync::OnceLock<engine::Precision> = std::sync::OnceLock::new();

/// The `--precision` asked for (`auto` unless set).
pub fn requested_precision() -> engine::Precision {
    PRECISION.get().copied().unwrap_or_default()
}

/// The runtime of a command that runs as one process, on the chosen adapter, in the `--precision`
/// asked for; with tuning on, its tile choices are timed at first use and remembered in the
/// adapter's tuning cache.
pub fn open_runtime(adapter: Option<&str>, tune: bool) -> Result<Runtime, String> {
    crate::distributed::open_runtime(adapter, tune, &Single)
}

pub fn load_data(kind: DatasetKind, dir: Option<&Path>, no_download: bool) -> Result<(datasets::Splits, PathBuf), String> {
    let dir = match (dir, kind) {
        (Some(d), _) => d.to_path_buf(),
        (None, DatasetKind::Folder) => {
            return Err("the folder dataset needs --data-dir ROOT (with ROOT/train/<class>/ and ROOT/test/<class>/)".into())
        }
        (None, _) => PathBuf::from("data").join(kind.name()),
    };
    eprintln!("loading {kind} from {}", dir.display());
    let mut http = http::Http::default();
    let net: Option<&mut dyn datasets::Downloader> = if no_download { None } else { Some(&mut http) };
    let splits = datasets::load(kind, &dir, net).map_err(|e| e.to_string())?;
    eprintln!("{} training and {} test images, {} classes", splits.train.len(), splits.test.len(), splits.train.classes.len());
    Ok((splits, dir))
}
