//! Downloads verified by size and MD5 before they are trusted. The file is written as
//! `<name>.part` and renamed only once verified, so an interrupted or corrupted download never
//! looks like a finished one.
//!
//! This crate opens no connection and draws nothing on the terminal: the caller hands in a
//! [`Downloader`] (the command line's does HTTP and a progress bar; tests serve bytes from memory).

use std::io::{Read, Write};
use std::path::Path;

use md5::{Digest, Md5};

use crate::error::{io_err, DatasetError, Result};

/// Where an official file lives and what it must be.
#[derive(Debug, Clone, Copy)]
pub struct Remote {
    pub url: &'static str,
    pub size: u64,
    /// Lower-case hex.
    pub md5: &'static str,
}

/// The network and the progress display, as the caller provides them.
pub trait Downloader {
    /// Starts fetching `url`: a reader over the body, and its length when the server says.
    fn open(&mut self, url: &str) -> std::result::Result<(Box<dyn Read>, Option<u64>), String>;
    /// `done` of `total` bytes of `name` have arrived.
    fn progress(&mut self, _name: &str, _done: u64, _total: u64) {}
    /// The transfer of `name` ended, complete or not.
    fn finished(&mut self, _name: &str) {}
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// MD5 of a file, lower-case hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Fetches `remote.url` into `dest` through `net`, and checks size and MD5.
pub fn download_verified(net: &mut dyn Downloader, remote: &Remote, dest: &Path) -> Result<()> {
    let name = dest.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let result = fetch(net, remote, dest, &name);
    net.finished(&name);
    result
}

fn fetch(net: &mut dyn Downloader, remote: &Remote, dest: &Path, name: &str) -> Result<()> {
    let err = |reason: String| DatasetError::Download { url: remote.url.to_string(), reason };
    let part = dest.with_extension("part");
    let (mut reader, length) = net.open(remote.url).map_err(err)?;
    let total = length.unwrap_or(remote.size);
    let mut out = std::fs::File::create(&part).map_err(io_err(&part))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| err(e.to_string()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err(&part))?;
        got += n as u64;
        net.progress(name, got, total);
    }
    out.sync_all().map_err(io_err(&part))?;
    drop(out);
    let md5 = hex(&h.finalize());
    if got != remote.size || md5 != remote.md5 {
        let _ = std::fs::remove_file(&part);
        return Err(err(format!(
            "got {got} bytes with MD5 {md5}, expected {} bytes with MD5 {}; the partial file was removed",
            remote.size, remote.md5
        )));
    }
    std::fs::rename(&part, dest).map_err(io_err(dest))
}

/// Adds what to do without a network to a failed download's message.
pub fn with_offline_hint(e: DatasetError, what: &str, dir: &Path) -> DatasetError {
    match e {
        DatasetError::Download { url, reason } => {
            DatasetError::Download { url, reason: format!("{reason}; without network access, copy {what} into {}", dir.display()) }
        }
        other => other,
    }
}

/// Checks a file already on disk against its remote's size and MD5.
pub fn verify(remote: &Remote, path: &Path) -> Result<()> {
    let size = std::fs::metadata(path).map_err(io_err(path))?.len();
    let md5 = md5_file(path)?;
    if size != remote.size || md5 != remote.md5 {
        return Err(crate::error::corrupt(
            path,
            format!("{size} bytes with MD5 {md5}, expected {} bytes with MD5 {} (a partial or different file?)", remote.size, remote.md5),
        ));
    }
    Ok(())
}
