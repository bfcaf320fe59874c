// grid.wgsl: the workgroup sizes and flat invocation index of the one-dimensional kernels. Not a
// family of its own: WGSL has no include, so engine/src/kernels.rs prepends this text to every
// family. A 1-D dispatch spreads its workgroups over x and y when they exceed one grid row
// (engine/src/grid.rs), so an invocation's index counts whole rows of the grid before its x.

// Threads per workgroup of a kernel with one thread per element.
const WG: u32 = 256u;
// Threads per workgroup of a kernel with one thread per row of a matrix (rows are few: a batch).
const WG_ROWS: u32 = 64u;

// The index of this invocation in a 1-D kernel of workgroup size WG.
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// The index of this invocation in a 1-D kernel of workgroup size WG_ROWS.
fn row_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG_ROWS;
}
