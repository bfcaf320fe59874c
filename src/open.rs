//! Opening what every command runs on: the runtime of this process (one rank of several, or the
//! only one) and the dataset.

use std::path::{Path, PathBuf};

use cifs::distributed::Collective;
use datasets::DatasetKind;
use engine::{Runtime, RuntimeOptions, Tuning};

use crate::distributed::adapter_for;
use crate::http;

/// The runtime of this rank, as `options` ask (the adapter spread over the node's GPUs when
/// several ranks share it); with tuning on, tile choices are timed at first use and kept in the
/// adapter's tuning cache (ranks other than 0 keep their own file beside it, so that no two
/// processes write one file). Warnings about the cache file are printed.
pub fn runtime(options: &RuntimeOptions, coll: &dyn Collective) -> Result<Runtime, String> {
    let mut options = options.clone();
    options.adapter = adapter_for(options.adapter.take(), coll);
    if let (Tuning::Tune { cache }, rank @ 1..) = (&mut options.tuning, coll.rank()) {
        *cache = std::mem::take(cache).tagged(&format!("rank{rank}"));
    }
    let rt = Runtime::new(options).map_err(|e| e.to_string())?;
    for w in rt.tuning().1 {
        cifs::say!("warning: {w}");
    }
    Ok(rt)
}

/// The dataset on this rank: rank 0 loads it first (downloading and unpacking what is missing),
/// the others after a barrier, finding what it left on a shared file system, so that no two
/// ranks write the same files at once. (Nodes with their own disks each download after the
/// barrier; pre-download there.) Rank 0's failure returns before the barrier; the caller's
/// abort then stops every rank.
pub fn dataset(
    coll: &dyn Collective,
    kind: DatasetKind,
    dir: Option<&Path>,
    no_download: bool,
) -> Result<(datasets::Splits, PathBuf), String> {
    if coll.size() == 1 {
        return load(kind, dir, no_download);
    }
    let first = if coll.rank() == 0 { Some(load(kind, dir, no_download)?) } else { None };
    coll.barrier();
    match first {
        Some(loaded) => Ok(loaded),
        None => load(kind, dir, no_download),
    }
}

/// Loads `kind` from `dir` (default `data/<dataset>`), downloading what is missing unless told not to.
fn load(kind: DatasetKind, dir: Option<&Path>, no_download: bool) -> Result<(datasets::Splits, PathBuf), String> {
    let dir = match (dir, kind) {
        (Some(d), _) => d.to_path_buf(),
        (None, DatasetKind::Folder) => {
            return Err("the folder dataset needs --data-dir ROOT (with ROOT/train/<class>/ and ROOT/test/<class>/)".into())
        }
        (None, _) => PathBuf::from("data").join(kind.name()),
    };
    cifs::say!("loading {kind} from {}", dir.display());
    let mut http = http::Http::default();
    let net: Option<&mut dyn datasets::Downloader> = if no_download { None } else { Some(&mut http) };
    let splits = datasets::load(kind, &dir, net).map_err(|e| e.to_string())?;
    cifs::say!("{} training and {} test images, {} classes", splits.train.len(), splits.test.len(), splits.train.classes.len());
    Ok((splits, dir))
}
