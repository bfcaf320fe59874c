//! Dataset readers on files the tests make: CIFAR-10 batches (directory, archive, download through
//! a downloader serving bytes from memory), SVHN .mat files (plain and compressed), image folders;
//! and every bad input the issue lists gets a clear error naming the file. Plus augmentation and
//! batching, including a loader that dies part-way.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use datasets::augment::Crop;
use datasets::cifar10::{self, RECORDS_PER_BATCH, RECORD_BYTES};
use datasets::download::{Downloader, Remote};
use datasets::loader::{batches, Pass};
use datasets::{folder, svhn, Dataset, IMAGE_BYTES};

#[path = "common/files.rs"]
mod files;
use files::tmpdir;

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
    check_cifar(&cifar10::load(&dir, None).unwrap());

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
    let e = cifar10::load(&empty, None).unwrap_err().to_string();
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

/// Serves `body` for any URL from memory, recording the progress it is told.
struct Memory {
    body: Vec<u8>,
    opened: Vec<String>,
    last_progress: u64,
    finished: usize,
}

impl Downloader for Memory {
    fn open(&mut self, url: &str) -> Result<(Box<dyn Read>, Option<u64>), String> {
        self.opened.push(url.to_string());
        Ok((Box::new(std::io::Cursor::new(self.body.clone())), Some(self.body.len() as u64)))
    }
    fn progress(&mut self, _name: &str, done: u64, _total: u64) {
        self.last_progress = done;
    }
    fn finished(&mut self, _name: &str) {
        self.finished += 1;
    }
}

#[test]
fn cifar10_downloads_verifies_and_extracts_the_archive() {
    let src = tmpdir("cifar-src");
    write_cifar_dir(&src);
    let archive = tar_gz_of(&src);
    let url = "https://example.invalid/cifar-10-binary.tar.gz";
    let mut net = Memory { body: archive.clone(), opened: vec![], last_progress: 0, finished: 0 };

    let dest = tmpdir("cifar-dl");
    let remote = Remote { url, size: archive.len() as u64, md5: Box::leak(md5_hex(&archive).into_boxed_str()) };
    check_cifar(&cifar10::load_from(&dest, Some(&mut net), &remote).unwrap());
    assert!(dest.join("cifar-10-binary.tar.gz").is_file());
    assert_eq!(net.opened, vec![url.to_string()]);
    assert_eq!((net.last_progress, net.finished), (archive.len() as u64, 1), "progress goes through the downloader");

    // A wrong checksum is refused and leaves nothing that looks finished.
    let dest2 = tmpdir("cifar-dl-bad");
    let bad = Remote { url, size: archive.len() as u64, md5: "00000000000000000000000000000000" };
    let e = cifar10::load_from(&dest2, Some(&mut net), &bad).unwrap_err().to_string();
    assert!(e.contains("MD5") && e.contains("example.invalid"), "{e}");
    assert!(!dest2.join("cifar-10-binary.tar.gz").exists() && !dest2.join("cifar-10-binary.tar.part").exists());
    assert_eq!(net.finished, 2, "a failed transfer is reported finished too");

    // An archive on disk that is not the expected file is refused before extraction.
    std::fs::write(dest2.join("cifar-10-binary.tar.gz"), &archive[..archive.len() / 2]).unwrap();
    let e = cifar10::load_from(&dest2, None, &remote).unwrap_err().to_string();
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
    for (dy, dx, flip) in [(0i8, 0i8, false), (-4, 3, false), (2, -1, true), (4, 4, true)] {
        let mut out = vec![0f32; IMAGE_BYTES];
        datasets::augment::crop_flip(&img, &mut out, Crop { dy, dx, flip }, datasets::ImageShape::RGB32);
        for c in 0..3 {
            for y in 0..32isize {
                for x in 0..32isize {
                    let sx = if flip { 31 - x } else { x } + dx as isize;
                    let sy = y + dy as isize;
                    let want = if (0..32).contains(&sx) && (0..32).contains(&sy) {
                        img[c * 1024 + (sy * 32 + sx) as usize] as f32 / 255.0
                    } else {
                        0.0
                    };
                    assert_eq!(out[c * 1024 + (y * 32 + x) as usize], want, "crop ({dy}, {dx}, {flip}) at c{c} y{y} x{x}");
                }
            }
        }
    }
    assert_eq!(Crop::from_draws(0, 8, 1), Crop { dy: -4, dx: 4, flip: true });
}

fn numbered(n: usize) -> Arc<Dataset> {
    Arc::new(Dataset {
        images: (0..n).flat_map(|i| vec![i as u8; IMAGE_BYTES]).collect(),
        labels: (0..n as u8).collect(),
        classes: vec!["a".into(), "b".into()],
        shape: datasets::ImageShape::RGB32,
    })
}

#[test]
fn batches_serve_the_given_order_with_the_given_crops() {
    let data = numbered(10);
    let order = vec![3, 1, 4, 0, 9, 2, 6];
    let crops: Vec<Crop> = (0..7).map(|i| Crop { dy: 0, dx: 0, flip: i % 2 == 1 }).collect();
    let got: Vec<_> =
        batches(data.clone(), Pass { batch_size: 3, order: order.clone(), crops: Some(crops) }).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(got.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![3, 3, 1]);
    assert_eq!(got.iter().flat_map(|b| b.labels.clone()).collect::<Vec<_>>(), order.iter().map(|&i| i as u32).collect::<Vec<_>>());
    // Image k of the pass is example order[k], every pixel order[k] / 255 (a flip of a constant
    // image is the same image): the second image of the second batch is order[4] = 9.
    assert_eq!(got[1].images[IMAGE_BYTES], 9.0 / 255.0);
    let plain: Vec<u32> = batches(data.clone(), Pass::in_order(10, 4)).unwrap().flat_map(|b| b.unwrap().labels).collect();
    assert_eq!(plain, (0..10).collect::<Vec<u32>>());
    assert!(batches(data.clone(), Pass { batch_size: 2, order: vec![10], crops: None }).is_err(), "an index past the split");
    // Dropping a pass part-way stops its producer thread.
    let mut it = batches(data, Pass::in_order(10, 1)).unwrap();
    it.next();
    drop(it);
}

#[test]
fn a_loader_that_dies_part_way_is_an_error_not_a_short_epoch() {
    // Five labels but pixels for three images: the producer panics on the fourth.
    let data = Arc::new(Dataset {
        images: vec![0u8; 3 * IMAGE_BYTES],
        labels: vec![0; 5],
        classes: vec!["a".into(), "b".into()],
        shape: datasets::ImageShape::RGB32,
    });
    let got: Vec<_> = batches(data, Pass::in_order(5, 1)).unwrap().collect();
    assert_eq!(got.iter().filter(|b| b.is_ok()).count(), 3);
    let e = got.last().unwrap().as_ref().err().expect("the pass must end with an error").to_string();
    assert!(e.contains("3 of 5"), "{e}");
}

#[test]
fn limits_take_a_fixed_class_balanced_subset() {
    // A class-sorted split, as an image folder gives: 5 of class 0, then 3 of class 1, 4 of class 2.
    let labels: Vec<u8> = [vec![0u8; 5], vec![1; 3], vec![2; 4]].concat();
    let d = Dataset {
        images: (0..12).flat_map(|i| vec![i as u8; IMAGE_BYTES]).collect(),
        labels,
        classes: vec!["a".into(), "b".into(), "c".into()],
        shape: datasets::ImageShape::RGB32,
    };
    let sub = d.clone().balanced(7);
    // Classes in turn: a0 b5 c8, a1 b6 c9, a2; kept in file order.
    assert_eq!(sub.labels, vec![0, 0, 0, 1, 1, 2, 2]);
    assert_eq!(sub.images.chunks(IMAGE_BYTES).map(|im| im[0]).collect::<Vec<_>>(), vec![0, 1, 2, 5, 6, 8, 9]);
    // A class that runs out drops out; the rest fill the subset.
    assert_eq!(d.clone().balanced(10).labels.iter().filter(|&&l| l == 1).count(), 3);
    assert_eq!(d.clone().balanced(100), d, "a limit past the split keeps it whole");
    assert_eq!(d.clone().balanced(7), sub, "the subset is fixed");
}

/// Serves several files from memory by URL.
struct Files {
    bodies: std::collections::HashMap<String, Vec<u8>>,
    opened: usize,
}

impl Downloader for Files {
    fn open(&mut self, url: &str) -> Result<(Box<dyn Read>, Option<u64>), String> {
        self.opened += 1;
        let body = self.bodies.get(url).ok_or_else(|| format!("404 {url}"))?.clone();
        let len = body.len() as u64;
        Ok((Box::new(std::io::Cursor::new(body)), Some(len)))
    }
}

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = [magic].iter().chain(dims).flat_map(|d| d.to_be_bytes()).collect();
    out.extend_from_slice(data);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Four small Fashion-MNIST files (3 training and 2 test images; pixel 0 of image i is i + 1 and
/// its label 9 - i), gzipped, with remotes describing them.
fn fashion_files() -> (Files, [Remote; 4]) {
    let images = |n: u32| {
        idx(0x803, &[n, 28, 28], &(0..n as usize * 784).map(|k| if k % 784 == 0 { (k / 784 + 1) as u8 } else { 0 }).collect::<Vec<_>>())
    };
    let labels = |n: u32| idx(0x801, &[n], &(0..n).map(|i| 9 - i as u8).collect::<Vec<_>>());
    let raw = [images(3), labels(3), images(2), labels(2)];
    let names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"];
    let mut bodies = std::collections::HashMap::new();
    let remotes = std::array::from_fn(|i| {
        let gz = gzip(&raw[i]);
        let url: &'static str = Box::leak(format!("https://example.invalid/{}", names[i]).into_boxed_str());
        let remote = Remote { url, size: gz.len() as u64, md5: Box::leak(md5_hex(&gz).into_boxed_str()) };
        bodies.insert(url.to_string(), gz);
        remote
    });
    (Files { bodies, opened: 0 }, remotes)
}

#[test]
fn fashion_mnist_downloads_verifies_and_reads_idx_files() {
    use datasets::fashion_mnist;
    let (mut net, remotes) = fashion_files();
    let dir = tmpdir("fmnist");
    let s = fashion_mnist::load_from(&dir, Some(&mut net), &remotes).unwrap();
    assert_eq!((s.train.len(), s.test.len(), net.opened), (3, 2, 4));
    assert_eq!(s.train.shape, datasets::ImageShape::GRAY28);
    assert_eq!((s.train.image(2)[0], s.train.image(2)[1], s.train.labels[2]), (3, 0, 7));
    assert_eq!(s.test.image(1).len(), 784);
    assert_eq!(s.train.classes[9], "Ankle boot");
    // Present files are verified and read without the network.
    let again = fashion_mnist::load_from(&dir, None, &remotes).unwrap();
    assert_eq!(again.train, s.train);

    // A damaged download is refused by its MD5.
    let bad = tmpdir("fmnist-bad");
    let mut tampered = fashion_files().0;
    tampered.bodies.get_mut(remotes[1].url).unwrap()[12] ^= 1;
    let e = fashion_mnist::load_from(&bad, Some(&mut tampered), &remotes).unwrap_err().to_string();
    assert!(e.contains("MD5") || e.contains("md5"), "{e}");
    // Missing files with downloading off, a truncated or foreign decompressed file, bad labels.
    let empty = tmpdir("fmnist-empty");
    assert!(fashion_mnist::load_from(&empty, None, &remotes).unwrap_err().to_string().contains("--no-download"));
    let raw = dir.join("train-images-idx3-ubyte");
    let full = idx(0x803, &[3, 28, 28], &[0u8; 3 * 784]);
    std::fs::write(&raw, &full[..100]).unwrap();
    let e = fashion_mnist::load_from(&dir, None, &remotes).unwrap_err().to_string();
    assert!(e.contains("truncated") && e.contains("train-images-idx3-ubyte"), "{e}");
    std::fs::write(&raw, idx(0x801, &[3], &[0, 1, 2])).unwrap();
    assert!(fashion_mnist::load_from(&dir, None, &remotes).unwrap_err().to_string().contains("magic"));
    std::fs::write(&raw, &full).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx(0x801, &[3], &[0, 12, 2])).unwrap();
    assert!(fashion_mnist::load_from(&dir, None, &remotes).unwrap_err().to_string().contains("label 12"));
}

#[test]
fn held_out_takes_the_classes_in_turn_in_the_given_order() {
    let labels: Vec<u8> = [vec![0u8; 5], vec![1; 3], vec![2; 4]].concat();
    let d = Dataset {
        images: (0..12).flat_map(|i| vec![i as u8; IMAGE_BYTES]).collect(),
        labels,
        classes: vec!["a".into(), "b".into(), "c".into()],
        shape: datasets::ImageShape::RGB32,
    };
    let order = [11, 4, 7, 0, 9, 6, 3, 5, 8, 1, 2, 10];
    // Classes in turn, each its next image in `order`: a4 b7 c11, a0 b6 c9, a3; sorted.
    let held = d.held_out(7, &order);
    assert_eq!(held, [0, 3, 4, 6, 7, 9, 11]);
    let rest = d.without(&held);
    assert_eq!(rest.images.chunks(IMAGE_BYTES).map(|im| im[0]).collect::<Vec<_>>(), [1, 2, 5, 8, 10]);
    assert_eq!(rest.labels, [0, 0, 1, 2, 2]);
    assert_eq!(d.subset(&held).labels, [0, 0, 0, 1, 1, 2, 2]);
    assert_eq!(d.held_out(100, &order), (0..12).collect::<Vec<_>>(), "more than the split holds: all of it");
}
