//! A reader for MATLAB level-5 MAT files, enough for SVHN: numeric arrays, compressed or not.
//!
//! Layout: a 128-byte header (text, subsystem offset, version 0x0100, endian "IM"), then data
//! elements. An element is a tag (type u32, byte count u32; or the small form: count in the high
//! 16 bits, type in the low 16, data in the next 4 bytes) and data padded to 8 bytes.
//! miCOMPRESSED (15) holds a zlib stream of further elements; miMATRIX (14) holds, as
//! sub-elements, array flags, dimensions, the name and the real part.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::error::{corrupt, Result};

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// A numeric array: its dimensions (column-major, as MATLAB stores it) and raw real part.
#[derive(Debug, Clone)]
pub struct MatArray {
    pub dims: Vec<usize>,
    data_type: u32,
    data: Vec<u8>,
}

impl MatArray {
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    fn width(&self) -> Option<usize> {
        Some(match self.data_type {
            MI_INT8 | MI_UINT8 => 1,
            MI_INT16 | MI_UINT16 => 2,
            MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
            MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
            _ => return None,
        })
    }

    /// Element `i` as f64 (None past the end or for an unknown type).
    pub fn get(&self, i: usize) -> Option<f64> {
        let w = self.width()?;
        let b = self.data.get(i * w..(i + 1) * w)?;
        Some(match self.data_type {
            MI_INT8 => b[0] as i8 as f64,
            MI_UINT8 => b[0] as f64,
            MI_INT16 => i16::from_le_bytes([b[0], b[1]]) as f64,
            MI_UINT16 => u16::from_le_bytes([b[0], b[1]]) as f64,
            MI_INT32 => i32::from_le_bytes(b.try_into().ok()?) as f64,
            MI_UINT32 => u32::from_le_bytes(b.try_into().ok()?) as f64,
            MI_SINGLE => f32::from_le_bytes(b.try_into().ok()?) as f64,
            MI_DOUBLE => f64::from_le_bytes(b.try_into().ok()?),
            MI_INT64 => i64::from_le_bytes(b.try_into().ok()?) as f64,
            _ => u64::from_le_bytes(b.try_into().ok()?) as f64,
        })
    }

    /// The raw bytes when stored as uint8 (SVHN's images), without a copy per element.
    pub fn as_u8(&self) -> Option<&[u8]> {
        (self.data_type == MI_UINT8).then_some(&self.data[..])
    }

    /// Whether the data holds all `numel` elements.
    pub fn is_complete(&self) -> bool {
        self.width().is_some_and(|w| self.data.len() >= self.numel() * w)
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn u32(&mut self) -> Option<u32> {
        let v = u32::from_le_bytes(self.b.get(self.pos..self.pos + 4)?.try_into().ok()?);
        self.pos += 4;
        Some(v)
    }

    /// Next element: (type, data). Advances past padding.
    fn element(&mut self) -> Option<(u32, &'a [u8])> {
        let first = self.u32()?;
        if first >> 16 != 0 {
            let (ty, n) = (first & 0xffff, (first >> 16) as usize);
            let data = self.b.get(self.pos..self.pos + n)?;
            self.pos += 4;
            return Some((ty, data));
        }
        let n = self.u32()? as usize;
        let data = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += if first == MI_COMPRESSED { n } else { n.div_ceil(8) * 8 };
        Some((first, data))
    }
}

fn parse_matrix(data: &[u8]) -> Option<(String, MatArray)> {
    let mut c = Cursor { b: data, pos: 0 };
    let (_, _flags) = c.element()?;
    let (dt, dims) = c.element()?;
    if dt != MI_INT32 {
        return None;
    }
    let dims: Vec<usize> = dims.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()).max(0) as usize).collect();
    let (_, name) = c.element()?;
    let name = String::from_utf8_lossy(name).to_string();
    let (data_type, real) = c.element().unwrap_or((MI_DOUBLE, &[]));
    Some((name, MatArray { dims, data_type, data: real.to_vec() }))
}

fn collect(bytes: &[u8], out: &mut HashMap<String, MatArray>, path: &Path) -> Result<()> {
    let mut c = Cursor { b: bytes, pos: 0 };
    while c.pos + 8 <= bytes.len() {
        let Some((ty, data)) = c.element() else {
            return Err(corrupt(path, format!("MAT file element at byte {} runs past the end (truncated?)", c.pos)));
        };
        match ty {
            MI_COMPRESSED => {
                let mut inner = Vec::new();
                flate2::read::ZlibDecoder::new(data)
                    .read_to_end(&mut inner)
                    .map_err(|e| corrupt(path, format!("bad compressed MAT element: {e}")))?;
                collect(&inner, out, path)?;
            }
            MI_MATRIX => {
                if let Some((name, arr)) = parse_matrix(data) {
                    out.insert(name, arr);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// All numeric arrays of a level-5 MAT file, by variable name.
pub fn read_mat(bytes: &[u8], path: &Path) -> Result<HashMap<String, MatArray>> {
    if bytes.len() < 128 || &bytes[126..128] != b"IM" {
        return Err(corrupt(path, "not a little-endian MATLAB level-5 MAT file (v7.3/HDF5 files are not supported)"));
    }
    let mut out = HashMap::new();
    collect(&bytes[128..], &mut out, path)?;
    Ok(out)
}
