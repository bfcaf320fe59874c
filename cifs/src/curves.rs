//! `curves.svg`: train loss and natural / robust test accuracy per epoch, as a self-contained SVG
//! (no plotting dependency). Two panels side by side; a dashed line marks where AT starts.

use std::fmt::Write;

/// One epoch's point. Accuracies in [0, 1]; `None` where not measured that epoch.
pub struct Point {
    pub epoch: usize,
    pub loss: f64,
    pub natural: Option<f64>,
    pub robust: Option<f64>,
    pub adversarial: bool,
}

fn polyline(out: &mut String, pts: &[(f64, f64)], color: &str) {
    if pts.is_empty() {
        return;
    }
    let p: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = write!(out, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, p.join(" "));
    for (x, y) in pts {
        let _ = write!(out, r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{color}"/>"#);
    }
}

/// Renders the plot; `title` names the run.
pub fn render(title: &str, points: &[Point]) -> String {
    let (w, h, pad) = (420.0, 260.0, 40.0);
    let max_epoch = points.iter().map(|p| p.epoch).max().unwrap_or(1).max(1) as f64;
    let max_loss = points.iter().map(|p| p.loss).filter(|l| l.is_finite()).fold(1e-9, f64::max);
    let x_of = |e: usize, left: f64| left + pad + (e as f64 / max_epoch) * (w - 2.0 * pad);
    let mut s = String::new();
    let _ = write!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#, 2.0 * w, h + 30.0);
    let _ = write!(s, r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="16" font-size="13">{}</text>"#, escape(title));
    for (panel, label) in [(0.0, "train loss"), (w, "test accuracy (natural: blue, PGD-20: red)")] {
        let _ = write!(s, r#"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="gray"/>"#, panel + pad, 30.0 + 10.0, w - 2.0 * pad, h - 2.0 * pad);
        let _ = write!(s, r#"<text x="{}" y="{}">{label}</text><text x="{}" y="{}">epoch {max_epoch}</text>"#, panel + pad, 30.0 + 5.0, panel + w - pad - 50.0, h + 20.0);
        if let Some(first_adv) = points.iter().find(|p| p.adversarial).filter(|p| p.epoch > 1) {
            let x = x_of(first_adv.epoch - 1, panel);
            let _ = write!(s, r#"<line x1="{x:.1}" y1="40" x2="{x:.1}" y2="{}" stroke="gray" stroke-dasharray="4 3"/>"#, h - pad + 30.0);
        }
    }
    let y_loss = |l: f64| 40.0 + (1.0 - l / max_loss) * (h - 2.0 * pad);
    let y_acc = |a: f64| 40.0 + (1.0 - a) * (h - 2.0 * pad);
    let _ = write!(s, r#"<text x="2" y="44">{max_loss:.2}</text><text x="{}" y="44">100%</text><text x="{}" y="{}">0%</text>"#, w + 8.0, w + 14.0, h - pad + 30.0);
    polyline(&mut s, &points.iter().filter(|p| p.loss.is_finite()).map(|p| (x_of(p.epoch, 0.0), y_loss(p.loss))).collect::<Vec<_>>(), "black");
    polyline(&mut s, &points.iter().filter_map(|p| p.natural.map(|a| (x_of(p.epoch, w), y_acc(a)))).collect::<Vec<_>>(), "#1f77b4");
    polyline(&mut s, &points.iter().filter_map(|p| p.robust.map(|a| (x_of(p.epoch, w), y_acc(a)))).collect::<Vec<_>>(), "#d62728");
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
