//! Downloads with a progress bar, verified by size and MD5 before they are trusted. The file is
//! written as `<name>.part` and renamed only once verified, so an interrupted or corrupted
//! download never looks like a finished one.

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

/// Fetches `remote.url` into `dest`, showing progress, and checks size and MD5.
pub fn download_verified(remote: &Remote, dest: &Path) -> Result<()> {
    let err = |reason: String| DatasetError::Download { url: remote.url.to_string(), reason };
    let part = dest.with_extension("part");
    let resp = ureq::get(remote.url).call().map_err(|e| err(e.to_string()))?;
    let total = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(remote.size);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("downloading {}", dest.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()));
    let mut reader = resp.into_body().into_reader();
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
        bar.set_position(got);
    }
    bar.finish_and_clear();
    out.sync_all().map_err(io_err(&part))?;
    drop(out);
    let md5 = hex(&h.finalize());
    if got != remote.size || md5 != remote.md5 {
        let _ = std::fs::remove_file(&part);
        return Err(err(format!("got {got} bytes with MD5 {md5}, expected {} bytes with MD5 {}; the partial file was removed", remote.size, remote.md5)));
    }
    std::fs::rename(&part, dest).map_err(io_err(dest))
}

/// Adds what to do without a network to a failed download's message.
pub fn with_offline_hint(e: DatasetError, what: &str, dir: &Path) -> DatasetError {
    match e {
        DatasetError::Download { url, reason } => DatasetError::Download { url, reason: format!("{reason}; without network access, copy {what} into {}", dir.display()) },
        other => other,
    }
}

/// Checks a file already on disk against its remote's size and MD5.
pub fn verify(remote: &Remote, path: &Path) -> Result<()> {
    let size = std::fs::metadata(path).map_err(io_err(path))?.len();
    let md5 = md5_file(path)?;
    if size != remote.size || md5 != remote.md5 {
        return Err(crate::error::corrupt(path, format!("{size} bytes with MD5 {md5}, expected {} bytes with MD5 {} (a partial or different file?)", remote.size, remote.md5)));
    }
    Ok(())
}
