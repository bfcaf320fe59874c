//! [`Collective`] over MPI (rsmpi over the system's Open MPI or MPICH), for processes launched
//! by `mpirun`/`mpiexec` or `srun`.
//!
//! Failure: MPI's default error handler ends the job on a communication error, and the
//! launcher ends every rank when one exits abnormally (killed, or failed without finalising).
//! A rank that fails on its own (an error, or a panic) calls [`Collective::abort`], MPI_Abort
//! on the world, so the others never wait in a collective for it.

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

use engine::ops::batchnorm_sync::ReplicaSum;

use crate::distributed::collective::Collective;

/// The ranks of `MPI_COMM_WORLD`.
pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_rank: usize,
    // Finalises MPI when dropped (at the end of `main`); kept last so the communicators go first.
    _universe: Universe,
}

impl Mpi {
    /// Initialises MPI. A panic on any rank from here on aborts every rank (an unwinding rank
    /// would otherwise leave the others waiting in a collective).
    pub fn init() -> Option<Mpi> {
        let universe = mpi::initialize()?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        // The ranks that share this node's memory: the local rank picks the node's GPU.
        let local_rank = world.split_shared(world.rank()).rank() as usize;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            crate::say!("rank {rank} of {size} panicked; aborting every rank");
            // SAFETY: MPI is initialised (the hook is set after initialisation) and
            // MPI_Abort may be called from any state of this process.
            unsafe {
                mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 1);
            }
        }));
        Some(Mpi { world, rank, size, local_rank, _universe: universe })
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
    }
    fn all_reduce_sum_u64(&self, buf: &mut [u64]) {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
    }
    fn replica_sum(&self) -> ReplicaSum {
        // The world communicator is a handle to MPI_COMM_WORLD: cheap to make at each call, and
        // it keeps the closure free of borrows.
        std::rc::Rc::new(|buf: &mut [f64]| {
            let send = buf.to_vec();
            SimpleCommunicator::world().all_reduce_into(&send[..], buf, SystemOperation::sum());
        })
    }
    fn barrier(&self) {
        self.world.barrier();
    }
    fn abort(&self, message: &str) -> ! {
        crate::say!("error (rank {} of {}): {message}", self.rank, self.size);
        crate::say!("rank {} is stopping every rank", self.rank);
        self.world.abort(1)
    }
}
