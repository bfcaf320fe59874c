//! The command line's downloader: HTTP(S) through ureq, with a progress bar per file. The dataset
//! crate asks for bytes through the `Downloader` trait and never opens a connection itself.

use std::io::Read;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Default)]
pub struct Http {
    bar: Option<ProgressBar>,
}

impl datasets::Downloader for Http {
    fn open(&mut self, url: &str) -> Result<(Box<dyn Read>, Option<u64>), String> {
        let resp = ureq::get(url).call().map_err(|e| e.to_string())?;
        let length = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        Ok((Box::new(resp.into_body().into_reader()), length))
    }

    fn progress(&mut self, name: &str, done: u64, total: u64) {
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(total);
            let style =
                ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}").expect("valid template");
            bar.set_style(style.progress_chars("=> "));
            bar.set_message(format!("downloading {name}"));
            bar
        });
        bar.set_position(done);
    }

    fn finished(&mut self, _name: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
