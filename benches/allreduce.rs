//! Cost of the per-step all-reduce of data-parallel training: the gradients and running
//! statistics of a ResNet18-CIFS of the given width, read back, all-reduced over the ranks and
//! written back, as every training step does. Run it under the launcher:
//!
//! `mpirun -n 2 target/release/deps/allreduce-<hash> [width] [steps]` (defaults 64 and 10).
//!
//! The GPU is idle while it runs, so the read-back here is the transfer alone (in training it
//! also waits for the step's work). Rank 0 prints the mean per step and one JSON line.

use cifs::distributed::exchange::{all_reduce_tensors, Exchange};
use cifs::distributed::mpi::Mpi;
use cifs::distributed::Collective;
use cifs::models::resnet::RESNET18_CIFS;
use cifs::{Model, ModelConfig};
use engine::{Runtime, Tensor};

fn main() {
    let mpi = Mpi::init().expect("MPI initialises once");
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let width: usize = args.next().map_or(64, |w| w.parse().expect("width"));
    let steps: usize = args.next().map_or(10, |s| s.parse().expect("steps"));
    let rt = Runtime::new(engine::RuntimeOptions::from_env().unwrap_or_else(|e| mpi.abort(&e.to_string())))
        .unwrap_or_else(|e| mpi.abort(&e.to_string()));
    let model =
        Model::new(&rt, ModelConfig::new(RESNET18_CIFS, width, 10), &mut engine::Rng::new(0)).unwrap_or_else(|e| mpi.abort(&e.to_string()));
    // Gradient-shaped tensors (the values do not change the cost) and the running statistics.
    let grads: Vec<Tensor> = model.params().iter().map(|p| p.leaf().detach()).collect();
    let weight = 1.0 / mpi.size() as f32;
    let mut tensors: Vec<(&Tensor, f32)> = grads.iter().map(|g| (g, weight)).collect();
    for bn in model.batchnorms() {
        tensors.extend([(&bn.running_mean, weight), (&bn.running_var, weight)]);
    }
    let mut timing = Exchange::default();
    all_reduce_tensors(&rt, &mpi, &tensors, &mut timing).unwrap(); // warm-up
    let mut timing = Exchange::default();
    mpi.barrier();
    for _ in 0..steps {
        all_reduce_tensors(&rt, &mpi, &tensors, &mut timing).unwrap_or_else(|e| mpi.abort(&e.to_string()));
    }
    if mpi.rank() == 0 {
        println!("{} ranks, width {width}, adapter {}: {}", mpi.size(), rt.adapter().name, timing.summary());
        let ms = |s: f64| 1e3 * s / steps as f64;
        println!(
            "{}",
            serde_json::json!({"ranks": mpi.size(), "width": width, "values": timing.values, "steps": steps, "adapter": rt.adapter().name,
                "read_ms": ms(timing.read), "pack_ms": ms(timing.pack), "mpi_ms": ms(timing.reduce), "write_ms": ms(timing.write),
                "total_ms": ms(timing.read + timing.pack + timing.reduce + timing.write)})
        );
    }
}
