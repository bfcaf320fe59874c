//! Dataset readers on files the tests make: CIFAR-10 batches (directory, archive, download from
//! a server on 127.0.0.1), SVHN .mat files (plain and compressed), image folders; and every bad
//! input the issue lists gets a clear error naming the file. Plus augmentation and batching.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datasets::cifar10::{self, RECORDS_PER_BATCH, RECORD_BYTES};
use datasets::download::Remote;
use datasets::loader::{batches, Pass};
use datasets::{folder, svhn, Dataset, Rng, IMAGE_BYTES};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cifs-wgpu-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A full-size batch whose record i has label (i + salt) % 10 and pixel 0 = i % 251.
fn cifar_batch(salt: usize) -> Vec<u8> {
    let mut b = vec![0u8; RECORDS_PER_BATCH * RECORD_BYTES];
    for i in 0..RECORDS_PER_BATCH {
        b[i * RECORD_BYTES] = ((i + salt) % 10) as u8;
        b[i * RECORD_BYTES + 1] = (i % 251) as u8;
        b[i * RECORD_BYTES + 3072] = 7; // last pixel of the blue plane
    }
    b
}

fn write_cifar_dir(dir: &Path) {
    let inner = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&inner).unwrap();
    for i in 1..=5 {
        std::fs::write(inner.join(format!("data_batch_{i}.bin")), cifar_batch(i)).unwrap();
    }
    std::fs::write(inner.join("test_batch.bin"), cifar_batch(0)).unwrap();
}

fn check_cifar(s: &datasets::Splits) {
    assert_eq!(s.train.len(), 50_000);
    assert_eq!(s.test.len(), 10_000);
    assert_eq!(s.train.labels[0], 1);
    assert_eq!(s.train.labels[10_000], 2);
    assert_eq!(s.test.image(3)[0], 3);
    assert_eq!(s.test.image(3)[IMAGE_BYTES - 1], 7);
    assert_eq!(s.train.classes[0], "airplane");
}

#[test]
fn cifar10_reads_a_batch_directory_and_rejects_bad_batches() {
    let dir = tmpdir("cifar-dir");
    write_cifar_dir(&dir);
    check_cifar(&cifar10::load(&dir, false).unwrap());

    let p = Path::new("data_batch_1.bin");
    let good = cifar_batch(0);
    let e = cifar10::parse_batch(&good[..good.len() - 1], p).unwrap_err().to_string();
    assert!(e.contains("truncated") && e.contains("data_batch_1.bin"), "{e}");
    let mut big = good.clone();
    big.push(0);
    assert!(cifar10::parse_batch(&big, p).unwrap_err().to_string().contains("oversized"));
    let mut bad = good;
    bad[RECORD_BYTES * 5] = 10;
    assert!(cifar10::parse_batch(&bad, p).unwrap_err().to_string().contains("record 5 has label 10"));

    let empty = tmpdir("cifar-empty");
    let e = cifar10::load(&empty, false).unwrap_err().to_string();
    assert!(e.contains("--no-download"), "{e}");
}

fn tar_gz_of(dir: &Path) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    t.append_dir_all("cifar-10-batches-bin", dir.join("cifar-10-batches-bin")).unwrap();
    t.into_inner().unwrap().finish().unwrap()
}

fn md5_hex(b: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Serves `body` to each of `requests` connections on 127.0.0.1; returns the URL.
fn serve(body: Vec<u8>, requests: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut s = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(&body);
        }
    });
    format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz")
}

#[test]
fn cifar10_downloads_verifies_and_extracts_the_archive() {
    let src = tmpdir("cifar-src");
    write_cifar_dir(&src);
    let archive = tar_gz_of(&src);
    let url: &'static str = Box::leak(serve(archive.clone(), 2).into_boxed_str());

    let dest = tmpdir("cifar-dl");
    let remote = Remote { url, size: archive.len() as u64, md5: Box::leak(md5_hex(&archive).into_boxed_str()) };
    check_cifar(&cifar10::load_from(&dest, true, &remote).unwrap());
    assert!(dest.join("cifar-10-binary.tar.gz").is_file());

    // A wrong checksum is refused and leaves nothing that looks finished.
    let dest2 = tmpdir("cifar-dl-bad");
    let bad = Remote { url, size: archive.len() as u64, md5: "00000000000000000000000000000000" };
    let e = cifar10::load_from(&dest2, true, &bad).unwrap_err().to_string();
    assert!(e.contains("MD5") && e.contains("127.0.0.1"), "{e}");
    assert!(!dest2.join("cifar-10-binary.tar.gz").exists() && !dest2.join("cifar-10-binary.tar.part").exists());

    // An archive on disk that is not the expected file is refused before extraction.
    std::fs::write(dest2.join("cifar-10-binary.tar.gz"), &archive[..archive.len() / 2]).unwrap();
    let e = cifar10::load_from(&dest2, false, &remote).unwrap_err().to_string();
    assert!(e.contains("MD5") && e.contains("cifar-10-binary.tar.gz"), "{e}");
}

// ---- SVHN -------------------------------------------------------------------------------------

fn element(ty: u32, data: &[u8]) -> Vec<u8> {
    let mut v = ty.to_le_bytes().to_vec();
    v.extend((data.len() as u32).to_le_bytes());
    v.extend(data);
    v.resize(v.len().div_ceil(8) * 8, 0);
    v
}

/// A MAT v5 matrix element (class uint8 with miUINT8 data, or double with miDOUBLE data).
fn matrix(name: &str, dims: &[i32], data_type: u32, data: &[u8]) -> Vec<u8> {
    let class = if data_type == 2 { 9u32 } else { 6u32 };
    let mut body = element(6, &[class.to_le_bytes(), 0u32.to_le_bytes()].concat());
    body.extend(element(5, &dims.iter().flat_map(|d| d.to_le_bytes()).collect::<Vec<_>>()));
    body.extend(element(1, name.as_bytes()));
    body.extend(element(data_type, data));
    element(14, &body)
}

fn mat_file(vars: &[Vec<u8>], compressed: bool) -> Vec<u8> {
    let mut f = vec![b' '; 116];
    f[..10].copy_from_slice(b"MATLAB 5.0");
    f.extend([0u8; 8]);
    f.extend(0x0100u16.to_le_bytes());
    f.extend(b"IM");
    for v in vars {
        if compressed {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(v).unwrap();
            let z = z.finish().unwrap();
            f.extend(15u32.to_le_bytes());
            f.extend((z.len() as u32).to_le_bytes());
            f.extend(z);
        } else {
            f.extend(v);
        }
    }
    f
}

fn svhn_vars(n: usize, labels: &[f64]) -> Vec<Vec<u8>> {
    // X[row + 32 (col + 32 (ch + 3 img))] = (row + 2 col + 5 ch + 11 img) % 256
    let mut x = vec![0u8; 3072 * n];
    for img in 0..n {
        for ch in 0..3 {
            for col in 0..32 {
                for row in 0..32 {
                    x[row + 32 * (col + 32 * (ch + 3 * img))] = ((row + 2 * col + 5 * ch + 11 * img) % 256) as u8;
                }
            }
        }
    }
    let y: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    vec![matrix("X", &[32, 32, 3, n as i32], 2, &x), matrix("y", &[n as i32, 1], 9, &y)]
}

#[test]
fn svhn_mat_files_plain_and_compressed() {
    for compressed in [false, true] {
        let bytes = mat_file(&svhn_vars(3, &[10.0, 1.0, 9.0]), compressed);
        let d = svhn::parse(&bytes, Path::new("train_32x32.mat")).unwrap();
        assert_eq!(d.labels, vec![0, 1, 9]);
        // CHW: image 2, channel 1, row 4, col 5.
        assert_eq!(d.image(2)[32 * 32 + 4 * 32 + 5] as usize, (4 + 2 * 5 + 5 + 22));
    }
}

#[test]
fn svhn_bad_files_are_clear_errors() {
    let p = Path::new("test_32x32.mat");
    let vars = svhn_vars(2, &[1.0, 2.0]);
    let e = svhn::parse(&mat_file(&vars[1..], true), p).unwrap_err().to_string();
    assert!(e.contains("no variable `X`") && e.contains("test_32x32.mat"), "{e}");
    let e = svhn::parse(&mat_file(&vars[..1], false), p).unwrap_err().to_string();
    assert!(e.contains("no variable `y`"), "{e}");
    let wrong = vec![matrix("X", &[32, 32, 1, 2], 2, &[0u8; 2048]), vars[1].clone()];
    let e = svhn::parse(&mat_file(&wrong, false), p).unwrap_err().to_string();
    assert!(e.contains("32x32x3xN"), "{e}");
    let e = svhn::parse(&mat_file(&svhn_vars(2, &[0.0, 2.0]), false), p).unwrap_err().to_string();
    assert!(e.contains("label 0 is 0"), "{e}");
    assert!(svhn::parse(b"definitely not a mat file", p).is_err());
    let full = mat_file(&vars, false);
    assert!(svhn::parse(&full[..full.len() - 3000], p).is_err(), "a truncated file must not parse");
}

// ---- image folders ----------------------------------------------------------------------------

fn png(path: &Path, w: u32, h: u32, value: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([value, x as u8, y as u8])).save(path).unwrap();
}

#[test]
fn image_folders_load_with_sorted_classes() {
    let root = tmpdir("folder-ok");
    for (split, n) in [("train", 3), ("test", 1)] {
        for (ci, class) in ["zebra", "apple"].iter().enumerate() {
            for i in 0..n {
                png(&root.join(split).join(class).join(format!("{i}.png")), 32, 32, (10 * ci + i) as u8);
            }
        }
    }
    let s = folder::load(&root).unwrap();
    assert_eq!(s.train.classes, vec!["apple", "zebra"]);
    assert_eq!(s.train.len(), 6);
    assert_eq!(s.test.len(), 2);
    assert_eq!(s.train.labels, vec![0, 0, 0, 1, 1, 1]);
    // apple is folder index 1 when written (value 10 + i); red plane holds the value, green holds x.
    assert_eq!(s.train.image(0)[0], 10);
    assert_eq!(s.train.image(0)[1024 + 5], 5);
    assert_eq!(s.train.image(0)[2048 + 32 * 7], 7);
}

#[test]
fn bad_image_folders_are_clear_errors() {
    let empty = tmpdir("folder-empty");
    assert!(folder::load(&empty).unwrap_err().to_string().contains("`train` folder"));
    std::fs::create_dir_all(empty.join("train")).unwrap();
    assert!(folder::load(&empty).unwrap_err().to_string().contains("at least two class folders"));

    let no_images = tmpdir("folder-noimg");
    for c in ["a", "b"] {
        std::fs::create_dir_all(no_images.join("train").join(c)).unwrap();
        std::fs::create_dir_all(no_images.join("test").join(c)).unwrap();
    }
    assert!(folder::load(&no_images).unwrap_err().to_string().contains("PNG or JPEG images"));

    let broken = tmpdir("folder-broken");
    for c in ["a", "b"] {
        png(&broken.join("train").join(c).join("0.png"), 32, 32, 1);
        png(&broken.join("test").join(c).join("0.png"), 32, 32, 1);
    }
    std::fs::write(broken.join("train/b/1.jpg"), b"not a jpeg").unwrap();
    let e = folder::load(&broken).unwrap_err().to_string();
    assert!(e.contains("1.jpg") && e.contains("cannot decode"), "{e}");
    std::fs::remove_file(broken.join("train/b/1.jpg")).unwrap();
    png(&broken.join("train/a/big.png"), 40, 32, 1);
    assert!(folder::load(&broken).unwrap_err().to_string().contains("40x32"));
}

// ---- augmentation and batching ----------------------------------------------------------------

#[test]
fn crop_flip_is_a_padded_shift_and_optional_flip() {
    let img: Vec<u8> = (0..IMAGE_BYTES).map(|i| (i % 250 + 1) as u8).collect();
    let mut rng = Rng::new(3);
    let mut seen_flip = [false; 2];
    for _ in 0..40 {
        let mut out = vec![0f32; IMAGE_BYTES];
        datasets::augment::crop_flip(&img, &mut out, &mut rng);
        let matches = |dy: isize, dx: isize, flip: bool| {
            (0..3).all(|c| (0..32).all(|y| (0..32).all(|x| {
                let sx = if flip { 31 - x } else { x } + dx;
                let sy = y + dy;
                let want = if (0..32).contains(&sx) && (0..32).contains(&sy) { img[c * 1024 + (sy * 32 + sx) as usize] as f32 / 255.0 } else { 0.0 };
                out[c * 1024 + (y * 32 + x) as usize] == want
            })))
        };
        let found: Vec<bool> = [false, true].into_iter().filter(|&f| (-4..=4).any(|dy| (-4..=4).any(|dx| matches(dy, dx, f)))).collect();
        assert!(!found.is_empty(), "output is no padded crop of the input");
        seen_flip[found[0] as usize] = true;
    }
    assert!(seen_flip[0] && seen_flip[1], "both flipped and unflipped crops should occur");
}

#[test]
fn batches_cover_the_split_once_and_replay_from_the_seed() {
    let n = 10;
    let data = Arc::new(Dataset {
        images: (0..n).flat_map(|i| vec![i as u8; IMAGE_BYTES]).collect(),
        labels: (0..n as u8).collect(),
        classes: vec!["a".into(), "b".into()],
    });
    let run = |seed| batches(data.clone(), Pass { batch_size: 4, train_seed: Some(seed) }).map(|b| (b.labels, b.images)).collect::<Vec<_>>();
    let a = run(5);
    assert_eq!(a.iter().map(|(l, _)| l.len()).collect::<Vec<_>>(), vec![4, 4, 2]);
    let mut all: Vec<u32> = a.iter().flat_map(|(l, _)| l.clone()).collect();
    all.sort();
    assert_eq!(all, (0..n as u32).collect::<Vec<_>>());
    assert_eq!(a, run(5));
    assert_ne!(a, run(6));
    let plain: Vec<u32> = batches(data.clone(), Pass { batch_size: 3, train_seed: None }).flat_map(|b| b.labels).collect();
    assert_eq!(plain, (0..n as u32).collect::<Vec<_>>());
    // Dropping a pass part-way stops its producer thread.
    let mut it = batches(data, Pass { batch_size: 1, train_seed: Some(1) });
    it.next();
    drop(it);
}
