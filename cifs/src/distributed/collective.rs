//! The seam between ranks: [`Collective`], the blocking operations they talk through, its
//! one-process implementation [`Single`], and what goes wrong between them.

use engine::ops::batchnorm_sync::ReplicaSum;
use thiserror::Error;

/// What goes wrong between ranks, or in a setting that cannot be split over them.
#[derive(Debug, Error)]
pub enum DistributedError {
    #[error(
        "a batch of {batch} images cannot be split over {ranks} ranks (each needs at least one image); use --batch-size of at least {ranks} and a training set whose last batch has at least {ranks} images (this one's last batch has {last})"
    )]
    BatchTooSmall { batch: usize, ranks: usize, last: usize },

    #[error(
        "{out} was trained with {trained} rank(s) and this launch has {now}; resume with the same number of ranks (`mpirun -n {trained}`)"
    )]
    RanksDiffer { out: String, trained: usize, now: usize },

    #[error("rank {rank} has other {what} than rank 0 ({hint})")]
    Disagree { rank: usize, what: &'static str, hint: &'static str },

    #[error("{out} was trained {trained} --sync-bn and this launch is {now} it; resume with the same setting")]
    SyncBnDiffers { out: String, trained: &'static str, now: &'static str },

    #[error("{0} does not run on several ranks yet; use one process")]
    Unsupported(&'static str),
}

/// The blocking operations the ranks of one run use to talk to each other. Every rank calls the
/// same operations in the same order with buffers of the same length; an implementation stops
/// the whole run (every rank) if a rank dies, so no call waits forever.
pub trait Collective {
    /// This process's index, 0-based.
    fn rank(&self) -> usize;

    /// How many ranks take part.
    fn size(&self) -> usize;

    /// This process's index among the ranks on its node (which GPU it takes).
    fn local_rank(&self) -> usize;

    /// Replaces `buf` with the element-wise sum of every rank's `buf`.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]);

    /// Replaces `buf` with the element-wise sum of every rank's `buf` (counts).
    fn all_reduce_sum_u64(&self, buf: &mut [u64]);

    /// The sum over the ranks as the engine's synchronised batch norm calls it.
    fn replica_sum(&self) -> ReplicaSum;

    /// Waits until every rank has called it.
    fn barrier(&self);

    /// Prints `message` and ends every rank's process with a failure status.
    fn abort(&self, message: &str) -> !;

    /// Rank 0's `values` on every rank (a sum to which only rank 0 contributes).
    fn broadcast_from_root(&self, values: &[u64]) -> Vec<u64> {
        let mut v = if self.rank() == 0 { values.to_vec() } else { vec![0; values.len()] };
        self.all_reduce_sum_u64(&mut v);
        v
    }

    /// Fails on every rank whose `fingerprint` differs from rank 0's. Call it on every rank.
    fn agree(&self, what: &'static str, hint: &'static str, fingerprint: u64) -> Result<(), DistributedError> {
        let root = self.broadcast_from_root(&[fingerprint >> 32, fingerprint & 0xFFFF_FFFF]);
        match (root[0] << 32 | root[1]) == fingerprint {
            true => Ok(()),
            false => Err(DistributedError::Disagree { rank: self.rank(), what, hint }),
        }
    }
}

/// How a training run is spread over ranks.
#[derive(Clone, Copy)]
pub struct Parallel<'a> {
    pub coll: &'a dyn Collective,
    /// Batch-norm statistics over the global batch in the training forward and backward
    /// (`--sync-bn`); otherwise over each rank's share.
    pub sync_bn: bool,
}

impl Parallel<'static> {
    /// One process.
    pub fn single() -> Parallel<'static> {
        Parallel { coll: &Single, sync_bn: false }
    }
}

/// One process: every operation is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn all_reduce_sum_f32(&self, _: &mut [f32]) {}
    fn all_reduce_sum_u64(&self, _: &mut [u64]) {}
    fn replica_sum(&self) -> ReplicaSum {
        std::rc::Rc::new(|_: &mut [f64]| {})
    }
    fn barrier(&self) {}
    fn abort(&self, message: &str) -> ! {
        crate::say!("error: {message}");
        std::process::exit(1)
    }
}

/// How many ranks a launcher started if it started this process as one of several: Open MPI's
/// `mpirun`, MPICH's Hydra, MVAPICH, or a Slurm step (`srun`). Read in every build, so that a
/// build without MPI refuses to run as N unconnected copies writing one output directory, and a
/// build with MPI refuses a world smaller than what the launcher started.
pub fn launched_ranks() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
        .filter(|&n: &usize| n > 1)
}

/// FNV-1a over bytes: a fingerprint for [`Collective::agree`] (equal inputs on every rank give
/// equal fingerprints; no security is asked of it).
pub fn fingerprint(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_rank_agrees_with_itself_and_reduces_to_identity() {
        let mut v = vec![1.5f32, -2.0];
        Single.all_reduce_sum_f32(&mut v);
        assert_eq!(v, [1.5, -2.0]);
        assert_eq!(Single.broadcast_from_root(&[7, 9]), [7, 9]);
        assert!(Single.agree("settings", "", fingerprint(*b"abc")).is_ok());
        assert_ne!(fingerprint(*b"abc"), fingerprint(*b"abd"));
    }
}
