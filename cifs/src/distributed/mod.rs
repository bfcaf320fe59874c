//! Data-parallel training and evaluation over several processes ("ranks"), one per GPU.
//!
//! Everything here talks to the other ranks through [`Collective`] (`collective`), a handful of blocking
//! operations: [`Single`] is the one-process implementation every default build uses, and
//! `mpi::Mpi` (cargo feature `mpi`) runs over MPI when the program is launched by `mpirun` or
//! `srun`. The data-parallel scheme:
//!
//! - Every rank replays the one-process run's global order, augmentation and random starts and
//!   takes a contiguous share of each global batch ([`shard`]); `--batch-size` stays the global
//!   batch.
//! - Each rank attacks and backpropagates its share; the gradients, weighted by the share's part
//!   of the global batch, are summed over the ranks in one flattened buffer per step, together
//!   with the batch-norm running statistics ([`exchange`]); every rank then applies the same SGD
//!   step, so the weights never drift apart.
//! - Batch-norm statistics are per rank in the training forward (as PyTorch's
//!   DistributedDataParallel), or with `--sync-bn` summed over the ranks, so that N ranks
//!   compute what one process computes at the global batch.
//! - Evaluation shards the test images and sums the counts ([`eval`]).

pub mod collective;
pub mod eval;
pub mod exchange;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod run;
pub mod shard;

pub use collective::{fingerprint, launched_ranks, Collective, DistributedError, Parallel, Single};
pub use eval::evaluate;
