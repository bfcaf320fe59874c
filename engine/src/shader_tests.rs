//! Checks of the WGSL itself, with naga and no GPU: every family and every specialisation the
//! engine compiles validates, parameter structs agree in size with their WGSL mirrors, every
//! entry point has a literal workgroup size, the conv tiles the host reasons about are the
//! shader's own, and specialisation rewrites exactly the declaration it names.

use crate::kernels::{Shader, SHARED_SOURCES};
use crate::ops::conv2d::TILE_K;
use crate::ops::param_sizes;
use crate::pipelines::{specialise, specialise_text, Specialised};
use crate::tune::{CoopTile, Tile};

/// The family as written and each of its registered specialisations, parsed.
fn variants(s: Shader) -> Vec<(String, Specialised)> {
    let mut all = vec![Vec::new()];
    all.extend(s.specialisations());
    all.into_iter()
        .map(|c| (format!("{} {c:?}", s.file_name()), specialise(s, &c).unwrap_or_else(|e| panic!("{}: {e}", s.file_name()))))
        .collect()
}

#[test]
fn every_shader_and_specialisation_validates() {
    for &s in Shader::ALL {
        for (name, v) in variants(s) {
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::IMMEDIATES
                    | naga::valid::Capabilities::SUBGROUP
                    | naga::valid::Capabilities::SHADER_FLOAT16
                    | naga::valid::Capabilities::COOPERATIVE_MATRIX,
            )
            .validate(&v.module)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&v.source)));
            assert!(v.module.entry_points.iter().all(|e| e.stage == naga::ShaderStage::Compute), "{name}");
        }
    }
}

#[test]
fn every_entry_point_of_every_specialisation_has_a_literal_workgroup_size() {
    // 1-D dispatches size their grids from these, read from the module as compiled.
    for &s in Shader::ALL {
        for (name, v) in variants(s) {
            for (entry, size) in v.workgroup_sizes() {
                let size = size.unwrap_or_else(|| panic!("{name}::{entry} has an override-sized workgroup"));
                assert!(size.iter().all(|&d| d >= 1), "{name}::{entry}: {size:?}");
            }
        }
    }
}

#[test]
fn params_structs_match_their_wgsl_mirrors() {
    for (s, size) in param_sizes() {
        let m = specialise(s, &[]).unwrap().module;
        let (_, var) = m
            .global_variables
            .iter()
            .find(|(_, v)| v.space == naga::AddressSpace::Immediate)
            .unwrap_or_else(|| panic!("{} declares no immediate params", s.file_name()));
        let layouter_size = m.types[var.ty].inner.size(m.to_ctx());
        assert_eq!(layouter_size as usize, size, "{}: WGSL Params is {layouter_size} bytes, Rust {size}", s.file_name());
        assert_eq!(size % 16, 0, "{}: keep Params a multiple of 16 bytes", s.file_name());
    }
}

#[test]
fn shaders_directory_has_no_unregistered_file() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    on_disk.sort();
    let mut registered: Vec<String> =
        Shader::ALL.iter().map(|s| s.file_name().to_string()).chain(SHARED_SOURCES.map(String::from)).collect();
    registered.sort();
    registered.dedup(); // a file compiled as two families (batch norm with and without subgroups)
    assert_eq!(on_disk, registered);
}

#[test]
fn conv_tiles_are_the_shaders_own() {
    let plain = specialise(Shader::Conv2d, &[]).unwrap();
    assert_eq!(plain.constant("BK"), Some(TILE_K));
    // As written, the shader is the 64x64 configuration.
    assert_eq!((plain.constant("BM"), plain.constant("BN")), (Some(Tile::T64X64.rows()), Some(Tile::T64X64.cols())));
    for t in Tile::ALL {
        let v = specialise(Shader::Conv2d, &t.constants()).unwrap();
        assert_eq!((v.constant("BM"), v.constant("BN")), (Some(t.rows()), Some(t.cols())), "{}", t.name());
        // The workgroup memory the host checks against the adapter's limit is the shader's own.
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(v.module.to_ctx()).unwrap();
        let globals = v.module.global_variables.iter();
        let bytes: u32 = globals.filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup).map(|(_, g)| layouter[g.ty].size).sum();
        assert_eq!(bytes, t.workgroup_bytes(), "{}", t.name());
    }
}

#[test]
fn specialisation_rewrites_only_the_one_declaration_it_names() {
    let text = "// const RM: u32 = 4u; in a comment is not a declaration\nconst RM: u32 = 4u;\nconst RMX: u32 = 2u * RM;\n";
    let v = specialise_text("t.wgsl", text, &[("RM", 8)]).unwrap();
    assert_eq!((v.constant("RM"), v.constant("RMX")), (Some(8), Some(16)));
    assert!(v.source.starts_with("// const RM: u32 = 4u;"), "the comment was rewritten:\n{}", v.source);
    let twice = "const RM: u32 = 4u;\nconst RM: u32 = 4u;\n";
    let err = specialise_text("t.wgsl", twice, &[("RM", 8)]).err().expect("two declarations").to_string();
    assert!(err.contains("exactly one line, it starts 2"), "{err}");
    let err = specialise_text("t.wgsl", "const X: u32 = 1u;\n", &[("RM", 8)]).err().expect("no declaration").to_string();
    assert!(err.contains("it starts 0"), "{err}");
    // A declaration inside a block comment is rewritten as text, but the module has no RM: the
    // check of the parsed value refuses it.
    let commented = "/*\nconst RM: u32 = 4u;\n*/\nconst X: u32 = 1u;\n";
    let err = specialise_text("t.wgsl", commented, &[("RM", 8)]).err().expect("a commented declaration").to_string();
    assert!(err.contains("the module has None"), "{err}");
    // Only registered specialisations compile.
    assert!(specialise(Shader::Conv2d, &[("RM", 2), ("RN", 4), ("PREFETCH", 1), ("DOUBLE", 0)]).is_err());
    assert!(specialise(Shader::Arith, &[("WG", 64)]).is_err());
}

#[test]
fn tensor_core_tiles_are_the_shaders_own() {
    // Every registered tensor-core specialisation: the tile and slice the host grids and splits
    // by, the threads per workgroup and the workgroup memory it checks against the adapter's
    // limits are the shader's own.
    for (shader, size) in [(Shader::Conv2dCoop8, 8), (Shader::Conv2dCoop16, 16)] {
        let mut seen = 0;
        for t in CoopTile::all(size) {
            for sg in crate::precision::SUBGROUP_SIZES.into_iter().filter(|&sg| t.valid(sg)) {
                let v = specialise(shader, &t.constants(sg)).unwrap();
                let name = format!("{} at subgroups of {sg}", t.name());
                assert_eq!(v.constant("CS"), Some(size), "{name}");
                assert_eq!(
                    (v.constant("TM"), v.constant("TN"), v.constant("TK")),
                    (Some(t.rows()), Some(t.cols()), Some(t.depth())),
                    "{name}"
                );
                let sizes = v.workgroup_sizes();
                assert!(
                    sizes.iter().filter(|(e, _)| e.ends_with("_coop")).all(|(_, s)| *s == Some([t.threads(sg), 1, 1])),
                    "{name}: {sizes:?}"
                );
                let mut layouter = naga::proc::Layouter::default();
                layouter.update(v.module.to_ctx()).unwrap();
                let coop =
                    v.module.global_variables.iter().filter(|(_, g)| {
                        g.space == naga::AddressSpace::WorkGroup && g.name.as_deref().is_some_and(|n| n.starts_with("coop_"))
                    });
                let bytes: u32 = coop.map(|(_, g)| layouter[g.ty].size).sum();
                assert_eq!(bytes, t.workgroup_bytes(), "{name}");
                seen += 1;
            }
        }
        assert!(seen >= 20, "{seen} specialisations of {}", shader.file_name());
    }
}
