//! The command line as one rank of several: which [`Collective`] this process joins and which
//! GPU it opens.

use cifs::distributed::{launched_ranks, Collective, Single};

/// The ranks this process belongs to: MPI's world when a launcher started several (built with
/// the `mpi` feature), else this process alone.
pub fn join() -> Result<Box<dyn Collective>, String> {
    #[cfg(feature = "mpi")]
    if let Some(n) = launched_ranks() {
        let mpi = cifs::distributed::mpi::Mpi::init().ok_or_else(|| "MPI was already initialised".to_string())?;
        // A launcher whose process manager this binary's MPI does not speak (srun without
        // --mpi=pmix, another MPI's mpirun) starts N worlds of one: N separate models into one
        // directory, unless refused here.
        if mpi.size() != n {
            return Err(format!(
                "the launcher started {n} ranks but MPI sees a world of {}: this cifs-wgpu's MPI does not match the launcher (with srun, pass --mpi=pmix or the plugin your cluster's MPI uses; with mpirun, use the one of the MPI this binary was built against)",
                mpi.size()
            ));
        }
        return Ok(Box::new(mpi));
    }
    #[cfg(not(feature = "mpi"))]
    if let Some(n) = launched_ranks() {
        return Err(format!(
            "started as one of {n} ranks, but this cifs-wgpu was built without MPI (N copies would train N separate models into one directory); build it with `cargo build --release --features mpi`"
        ));
    }
    Ok(Box::new(Single))
}

/// The adapter preference of this rank: the one `given` (`--adapter` or `CIFS_WGPU_ADAPTER`),
/// else (with several ranks) the node's GPUs of the best type in `info` order, taken in turn by
/// local rank.
pub fn adapter_for(given: Option<String>, coll: &dyn Collective) -> Option<String> {
    if coll.size() == 1 {
        return given;
    }
    spread(given, &engine::gpu::list_adapters(), coll.local_rank())
}

/// Device types, best first.
const TYPES: [&str; 5] = ["discrete", "integrated", "virtual", "cpu", "other"];

/// The adapter of local rank `local` of several: a preference naming one adapter (an index or
/// part of a name) is kept; a device type, or none (the best type present), is spread over the
/// node's adapters of that type in turn, so that ranks told `discrete` do not all open the
/// first discrete GPU. `None` where no adapter of the type exists (the runtime then says so).
fn spread(given: Option<String>, all: &[engine::gpu::AdapterSummary], local: usize) -> Option<String> {
    let wanted = match given {
        Some(g) if TYPES.contains(&g.trim().to_lowercase().as_str()) => g.trim().to_lowercase(),
        Some(g) => return Some(g),
        None => TYPES.iter().find(|t| all.iter().any(|a| a.device_type == **t))?.to_string(),
    };
    let candidates: Vec<usize> = all.iter().filter(|a| a.device_type == wanted).map(|a| a.index).collect();
    if candidates.is_empty() {
        return Some(wanted);
    }
    Some(candidates[local % candidates.len()].to_string())
}

#[cfg(test)]
mod tests {
    use super::spread;
    use engine::gpu::AdapterSummary;

    fn adapter(index: usize, device_type: &str) -> AdapterSummary {
        let s = String::new;
        AdapterSummary { index, name: format!("gpu{index}"), backend: s(), device_type: device_type.into(), driver: s(), driver_info: s() }
    }

    #[test]
    fn ranks_spread_over_the_adapters_of_a_type_and_keep_a_named_one() {
        let all = [adapter(0, "cpu"), adapter(1, "discrete"), adapter(2, "discrete")];
        let pick = |given: Option<&str>, local| spread(given.map(String::from), &all, local);
        assert_eq!((pick(None, 0), pick(None, 1), pick(None, 2)), (Some("1".into()), Some("2".into()), Some("1".into())));
        assert_eq!((pick(Some("Discrete"), 0), pick(Some("discrete"), 1)), (Some("1".into()), Some("2".into())));
        assert_eq!(pick(Some("cpu"), 1), Some("0".into()));
        assert_eq!(pick(Some("2"), 0), Some("2".into()), "an index is kept");
        assert_eq!(pick(Some("gpu1"), 1), Some("gpu1".into()), "a name is kept");
        assert_eq!(pick(Some("integrated"), 0), Some("integrated".into()), "none of the type: the runtime's error");
    }
}
