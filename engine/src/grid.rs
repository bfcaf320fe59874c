//! The one place dispatch grids are computed.
//!
//! Every backend accepts at most 65 535 workgroups per grid dimension. A 1-D kernel's items are
//! therefore spread over x and y when they need more groups than that, and every 1-D WGSL kernel
//! rebuilds its linear index from both (`flat_index` and `row_index` in `shaders/grid.wgsl`,
//! prepended to every family).
//! Kernels that take explicit workgroup counts (GEMM tiles, one workgroup per channel) get an
//! error, not a silently truncated grid, when a count exceeds the limit.

use crate::error::{EngineError, Result};

/// Largest workgroup count of one grid dimension that every backend accepts.
pub const MAX_GRID_DIM: u32 = 65_535;

/// What a dispatch covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// One invocation per item of a 1-D kernel; the grid follows from the kernel's workgroup size.
    Items(u64),
    /// Explicit workgroup counts (x, y, z).
    Groups([u32; 3]),
}

impl Work {
    /// Workgroups that cover `n` items of `wg` invocations each, within the dimension limit.
    pub fn items_grid(n: u64, wg: u32) -> Result<[u32; 3]> {
        let groups = n.div_ceil(wg as u64).max(1);
        if groups <= MAX_GRID_DIM as u64 {
            return Ok([groups as u32, 1, 1]);
        }
        let y = groups.div_ceil(MAX_GRID_DIM as u64);
        if y > MAX_GRID_DIM as u64 {
            return Err(EngineError::GridTooLarge { groups: [groups, 1, 1], limit: MAX_GRID_DIM });
        }
        let x = groups.div_ceil(y);
        Ok([x as u32, y as u32, 1])
    }

    /// The grid of this work for a kernel of workgroup size `wg` (`None`: override-sized, which
    /// only explicit groups can drive).
    pub fn grid(self, entry: &'static str, wg: Option<[u32; 3]>) -> Result<[u32; 3]> {
        match self {
            Work::Items(n) => match wg {
                Some([x, 1, 1]) => Self::items_grid(n, x),
                _ => Err(EngineError::NotOneDimensional { entry }),
            },
            Work::Groups(g) => {
                if g.iter().any(|&d| d > MAX_GRID_DIM) {
                    return Err(EngineError::GridTooLarge { groups: g.map(u64::from), limit: MAX_GRID_DIM });
                }
                Ok(g)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Work, MAX_GRID_DIM};

    #[test]
    fn items_split_within_the_dimension_limit() {
        assert_eq!(Work::items_grid(1, 256).unwrap(), [1, 1, 1]);
        assert_eq!(Work::items_grid(256 * 65535, 256).unwrap(), [65535, 1, 1]);
        let [x, y, _] = Work::items_grid(256 * 65536 + 1, 256).unwrap();
        assert!(x <= MAX_GRID_DIM && y >= 2 && x as u64 * y as u64 * 256 > 256 * 65536);
        assert!(Work::Groups([70_000, 1, 1]).grid("k", None).is_err());
        assert!(Work::Items(10).grid("k", None).is_err(), "override-sized kernels take explicit groups");
    }
}
